"""Failure drill: PostgreSQL restarts while annotators submit.

The drill runs on a private cluster (initdb into a temporary directory, its own port): gunicorn in production
mode serves three annotators over HTTP who submit one item after the other; PostgreSQL is restarted (`pg_ctl
restart -m fast`), then stopped for a few seconds and started again. A submit that meets the outage must get
a 503 with Retry-After and a message saying the answer was not saved (webapp/middleware_db.py), never a bare
500; the same submit sent again once the server is back saves it; and every annotation a client saw saved is
in the database exactly once. The fast tests below check the middleware in this process. See
docs/operations.md, "Failure drills".
"""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.test import Client, RequestFactory

from tests.drill_support import (
    Annotator,
    PrivatePostgres,
    PrivateRedis,
    annotators,
    gunicorn_log,
    htmx_submit,
    manage,
    needs_private_postgres,
    needs_redis_server,
    process_env,
    python,
    start_gunicorn,
    stop,
)
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from webapp import middleware_db
from webapp.models import Assignment, HumanAnnotation, Membership

SAVED = b'role="status">Saved.</p>'
ALREADY = b'role="status">Already saved'
HTMX = {"HTTP_HX_REQUEST": "true"}


# --- the middleware, in this process -----------------------------------------------------------------


@pytest.fixture
def annotating(db: None, settings: Any) -> tuple[Client, Any]:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    project = ProjectFactory(slug="db-outage", aspects=["overall"], ask_confidence=False, overlap_normal=1)
    ItemFactory(project=project, external_id="q-1")
    user = UserFactory(username="outage-annotator")
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    assert client.get("/p/db-outage/annotate/").status_code == 200
    return client, Assignment.objects.get(annotator=user)


def _submit(client: Client, assignment: Assignment, **headers: Any) -> Any:
    return client.post(
        f"/p/db-outage/annotate/{assignment.pk}/submit", {"pref-overall": "Tie", "active_seconds": "3"}, **headers
    )


@pytest.mark.parametrize("error", [OperationalError, InterfaceError])
def test_a_submit_that_loses_the_database_gets_a_503_saying_it_was_not_saved(annotating, monkeypatch, error):
    client, assignment = annotating

    def down(*args: Any, **kwargs: Any) -> Any:
        raise error("terminating connection due to administrator command")

    monkeypatch.setattr("webapp.views_annotate.submit_and_claim_next", down)
    monkeypatch.setattr("webapp.views_annotate.submit_annotation", down)

    partial = _submit(client, assignment, **HTMX)
    assert partial.status_code == 503
    assert partial["Retry-After"] == str(middleware_db.RETRY_AFTER_S)
    assert partial["Cache-Control"] == "no-store"
    text = partial.content.decode()
    assert text.startswith('<p class="notice warn" role="status"')
    assert "NOT saved" in text
    assert "submit again" in text

    page = _submit(client, assignment)
    assert page.status_code == 503
    assert "nothing was saved" in page.content.decode()
    assert "Retry-After" in page
    assert not HumanAnnotation.objects.exists()


def test_a_database_error_before_the_view_runs_is_a_503_too(annotating, monkeypatch):
    """The user is read by a middleware, before the view: Django has made that a 500 already."""
    client, _ = annotating

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr("webapp.auth.ModelBackend.get_user", down)
    response = client.get("/p/db-outage/annotate/", **HTMX)
    assert response.status_code == 503
    assert "NOT saved" in response.content.decode()
    assert response["Retry-After"] == str(middleware_db.RETRY_AFTER_S)
    # Security headers from the outer middleware are still there.
    assert response["X-Content-Type-Options"] == "nosniff"


def test_the_api_gets_json_and_other_errors_stay_500(annotating, monkeypatch):
    request = RequestFactory().get("/api/v1/projects")
    mw = middleware_db.DatabaseUnavailableMiddleware(lambda r: None)  # type: ignore[arg-type,return-value]
    response = mw.process_exception(request, OperationalError("server closed the connection unexpectedly"))
    assert response is not None
    assert response.status_code == 503
    assert json.loads(response.content) == {"detail": middleware_db.PAGE_MESSAGE, "retryable": True}
    assert mw.process_exception(request, ValueError("a bug")) is None

    client, assignment = annotating

    def bug(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug, not an outage")

    monkeypatch.setattr("webapp.views_annotate.submit_and_claim_next", bug)
    assert _submit(client, assignment, **HTMX).status_code == 500


def test_one_annotation_per_assignment_is_a_database_rule(annotating):
    """A retried submit that had been committed is answered "Already saved" (test_annotate_views.py
    test_a_double_submit_stores_one_annotation); underneath, the database refuses a second row."""
    client, assignment = annotating
    assert b"Saved." in _submit(client, assignment, **HTMX).content
    again = _submit(client, assignment, **HTMX)
    assert again.status_code == 200
    assert ALREADY in again.content
    first = HumanAnnotation.objects.get(assignment=assignment)
    with pytest.raises(IntegrityError, match="assignment_id"), transaction.atomic():
        HumanAnnotation.objects.create(
            item=first.item, external_annotator="someone-else", assignment=assignment, preferences={"overall": "Tie"}
        )
    assert HumanAnnotation.objects.filter(assignment=assignment).count() == 1


@pytest.mark.skipif(shutil.which("chromedriver") is None, reason="make test installs chromium-driver")
@pytest.mark.django_db(transaction=True)
def test_in_the_browser_the_message_shows_and_the_answers_stay_for_the_retry(
    browser, live_server, monkeypatch, settings
):
    """annotate.js: htmx swaps no 5xx; the page says the answer was not saved and keeps the form as it was."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    project = ProjectFactory(slug="db-outage-browser", aspects=["overall"], ask_confidence=False, overlap_normal=1)
    for k in range(2):
        ItemFactory(project=project, external_id=f"q-{k}")
    user = UserFactory(username="outage-browser", password="correct-horse-battery")
    MembershipFactory(project=project, user=user, role=Membership.ANNOTATOR)
    browser.get(f"{live_server.url}/login/?next=/p/{project.slug}/annotate/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys("correct-horse-battery")
    browser.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.ID, "annotation-form")))
    shown = browser.find_element(By.ID, "workspace").get_attribute("data-assignment")

    from webapp import views_annotate

    real = views_annotate.submit_and_claim_next

    def down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("the database system is shutting down")

    monkeypatch.setattr(views_annotate, "submit_and_claim_next", down)
    browser.find_element(By.CSS_SELECTOR, 'input[name="pref-overall"][value="Tie"]').click()
    browser.find_element(By.ID, "justification").send_keys("Both answers say the same.")
    browser.find_element(By.CSS_SELECTOR, "#annotation-form button[type=submit]").click()
    status = WebDriverWait(browser, 10).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#workspace p.notice[role=status]"), "NOT saved")
    )
    assert status
    assert browser.find_element(By.CSS_SELECTOR, 'input[name="pref-overall"][value="Tie"]').is_selected()
    assert browser.find_element(By.ID, "justification").get_attribute("value") == "Both answers say the same."
    assert browser.find_element(By.ID, "workspace").get_attribute("data-assignment") == shown
    assert not HumanAnnotation.objects.exists()

    monkeypatch.setattr(views_annotate, "submit_and_claim_next", real)
    browser.find_element(By.CSS_SELECTOR, "#annotation-form button[type=submit]").click()
    WebDriverWait(browser, 10).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#workspace p.notice[role=status]"), "Saved.")
    )
    saved = HumanAnnotation.objects.get()
    assert saved.assignment_id == int(shown)
    assert saved.justification == "Both answers say the same."


# --- the drill -------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What one annotator's client saw."""

    saved: list[tuple[str, float]] = field(default_factory=list)  # (assignment, when), "Saved." or "Already saved"
    already: int = 0
    unavailable: list[float] = field(default_factory=list)  # times of 503s
    connection_errors: int = 0
    errors: list[str] = field(default_factory=list)


def _annotate_until(a: Annotator, ledger: Ledger, stop_event: threading.Event) -> None:
    """Submit item after item; a submit that is not saved is sent again, unchanged, until it is."""
    while not stop_event.is_set():
        fields = a.answer()
        while True:
            try:
                status, headers, page = htmx_submit(a, fields)
            except (OSError, http.client.HTTPException):
                ledger.connection_errors += 1
                a.browser.conn.close()
                time.sleep(0.2)
                continue
            if status == 200 and (SAVED in page or ALREADY in page):
                ledger.saved.append((a.assignment, time.monotonic()))
                ledger.already += ALREADY in page
                try:
                    a._read_workspace(page)
                except Exception as exc:
                    ledger.errors.append(f"after a save: {exc}")
                    return
                break
            if status == 503:
                text = page.decode(errors="replace")
                if "Retry-After" not in headers or "NOT saved" not in text or "submit again" not in text:
                    ledger.errors.append(f"a 503 without Retry-After or the message: {headers} {text[:300]}")
                    return
                ledger.unavailable.append(time.monotonic())
                time.sleep(0.2)  # a person would wait Retry-After; the drill is in a hurry
                continue
            ledger.errors.append(f"HTTP {status}: {page[:300]!r}")
            return
        time.sleep(0.05)


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(180)
@needs_private_postgres
@needs_redis_server
def test_annotators_keep_submitting_through_a_postgres_restart_and_nothing_is_lost_or_doubled(tmp_path):
    with PrivatePostgres() as pg, PrivateRedis(tmp_path / "redis") as redis_server:
        pg.psql("CREATE DATABASE hp")
        env = process_env(pg.url("hp"), redis_server.url(1))
        manage("migrate", "--noinput", env=env)
        seeded = json.loads(
            python(
                "import json\nfrom tests.drill_support import seed_annotation_project as seed\n"
                "print(json.dumps(seed(n_items=80, n_annotators=3)))",
                env=env,
            ).strip()
        )
        server, port = start_gunicorn(tmp_path, database=pg.url("hp"), broker=redis_server.url(0))
        try:
            people = annotators(port, seeded["usernames"])
            ledgers = [Ledger() for _ in people]
            stop_event = threading.Event()
            threads = [
                threading.Thread(target=_annotate_until, args=(a, led, stop_event), daemon=True)
                for a, led in zip(people, ledgers, strict=True)
            ]
            for t in threads:
                t.start()

            def saves() -> int:
                return min(len(led.saved) for led in ledgers)

            _wait_for(lambda: saves() >= 3, 30, "three saves each before the restart")
            # A restart as an operator does it: a fast shutdown and start, well under a second.
            pg.restart("fast")
            _wait_for(lambda: saves() >= 6, 30, "saves after `pg_ctl restart -m fast`")
            # And one that lasts: stopped for a few seconds, submits meanwhile get 503s.
            pg.stop("fast")
            down_at = time.monotonic()
            health = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            health.request("GET", "/healthz")
            health_status = health.getresponse().status
            _wait_for(lambda: sum(len(led.unavailable) for led in ledgers) >= 3, 15, "503s during the outage")
            time.sleep(max(0.0, 2.5 - (time.monotonic() - down_at)))
            pg.start()
            up_at = time.monotonic()
            before = [len(led.saved) for led in ledgers]
            _wait_for(
                lambda: all(len(led.saved) >= n + 3 for led, n in zip(ledgers, before, strict=True)),
                30,
                "three saves each after the outage",
            )
            stop_event.set()
            for t in threads:
                t.join(timeout=30)

            # A submit committed whose answer got lost on the way: sent again, it is "Already saved".
            retried = people[0]
            fields = retried.answer()
            assert htmx_submit(retried, fields)[0] == 200  # the reply "lost"
            status, _, page = htmx_submit(retried, fields)
            assert status == 200
            assert ALREADY in page
            lost_reply_assignment = retried.assignment
        finally:
            stop(server)
            log = gunicorn_log(tmp_path)

        errors = [e for led in ledgers for e in led.errors]
        assert not errors, f"{errors}\n{log}"
        assert health_status == 503
        unavailable = [t for led in ledgers for t in led.unavailable]
        assert unavailable, "no submit met the outage"
        # Once PostgreSQL is back, the app's persistent connections recover at once (CONN_HEALTH_CHECKS).
        assert max(unavailable) < up_at + 2.0, f"503s went on {max(unavailable) - up_at:.1f} s after the start"

        seen = [assignment for led in ledgers for assignment, _ in led.saved] + [lost_reply_assignment]
        rows = pg.psql("SELECT assignment_id, count(*) FROM webapp_humanannotation GROUP BY 1", db="hp").splitlines()
        stored = Counter({int(a): int(n) for a, n in (r.split("|") for r in rows)})
        assert set(stored.values()) == {1}, "an annotation stored twice"
        assert set(stored) == {int(a) for a in seen}, "a saved annotation missing, or one nobody saw saved"
        assert len(seen) == len(set(seen))
        submitted = pg.psql("SELECT count(*) FROM webapp_assignment WHERE status = 'submitted'", db="hp")
        assert int(submitted) == len(stored)
        print(
            f"\npostgres drill: {len(stored)} annotations saved, {len(unavailable)} submits answered 503 during"
            f" the outage, {sum(led.already for led in ledgers)} 'already saved' retries,"
            f" {sum(led.connection_errors for led in ledgers)} connection errors"
        )

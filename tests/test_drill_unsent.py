"""Drill: imports and exports started while the broker (Redis) is down.

Their rows are kept, marked unsent, and the page says so (no error page). Once Redis answers again, the page
that lists them sends them (services.dispatch.resend_unsent; it polls while something waits), or
`manage.py resend_tasks`; a worker then runs each once. See docs/operations.md, "Redis down".
"""

from __future__ import annotations

import time
from io import StringIO
from typing import Any

import pytest
import redis
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.drill_support import PrivateRedis, Worker, celery_broker, database_url, needs_redis_server
from tests.factories import ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from tests.test_celery_worker import native_rows
from webapp.models import ExportSnapshot, ImportJob, Item, Membership, Project
from webapp.services import dispatch
from webapp.services.imports import enqueue_import

pytestmark = [needs_redis_server, pytest.mark.django_db(transaction=True)]
NOT_SENT = "not sent yet"


def manager_client(client: Any, project: Project) -> Any:
    user = UserFactory(username=f"boss-{project.slug}")
    MembershipFactory(project=project, user=user, role=Membership.MANAGER)
    client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def no_pause_between_tries(monkeypatch: Any) -> None:
    monkeypatch.setattr(dispatch, "RETRY_AFTER_S", 0.0)


def test_an_import_started_while_the_broker_is_down_runs_once_when_it_is_back(tmp_path, write_jsonl, client):
    project = ProjectFactory(slug="unsent-import")
    client = manager_client(client, project)
    path = write_jsonl(native_rows(6))
    worker = None
    with PrivateRedis(tmp_path / "redis") as broker, celery_broker(broker.url(0)):
        broker.kill()
        job = enqueue_import(project, path, fmt="native")  # no error: kept, and marked
        assert job.unsent
        job.refresh_from_db()
        assert (job.status, job.unsent) == (ImportJob.QUEUED, True)
        page = client.get(reverse("upload", args=[project.slug])).content.decode()
        assert NOT_SENT in page
        assert 'hx-trigger="every 2s"' in page  # the page polls: each poll tries again
        with pytest.raises(CommandError, match="still unreachable"):
            call_command("resend_tasks", stdout=StringIO())
        job.refresh_from_db()
        assert job.unsent

        broker.start()
        try:
            worker = Worker(tmp_path, database=database_url(), broker=broker.url(0)).wait_ready()
            client.get(reverse("upload", args=[project.slug]))  # the page's next poll sends it
            job.refresh_from_db()
            assert not job.unsent
            deadline = time.monotonic() + 60
            while job.status != ImportJob.DONE:
                assert time.monotonic() < deadline, worker.output()
                time.sleep(0.2)
                job.refresh_from_db()
            out = StringIO()
            call_command("resend_tasks", stdout=out)  # nothing left: nothing sent twice
            assert "sent 0 task(s); 0 still unsent" in out.getvalue()
            assert redis.Redis(port=broker.port).llen("celery") == 0
        finally:
            if worker is not None:
                worker.stop()
    assert job.created == 6
    assert Item.objects.filter(project=project).count() == 6
    assert worker.output().count("Task webapp.run_import[") == 2  # received and succeeded: once


def test_an_export_started_while_the_broker_is_down_is_kept_and_said_so(tmp_path, client):
    project = ProjectFactory(slug="unsent-export", aspects=["overall"])
    ItemFactory(project=project)
    client = manager_client(client, project)
    with PrivateRedis(tmp_path / "redis") as broker, celery_broker(broker.url(0)):
        broker.kill()
        response = client.post(
            reverse("export-start", args=[project.slug]), {"format": "trl-preference", "file_type": "jsonl"}
        )
        assert response.status_code == 302
        snapshot = ExportSnapshot.objects.get(project=project)
        assert (snapshot.status, snapshot.unsent) == (ExportSnapshot.RUNNING, True)
        page = client.get(response["Location"]).content.decode()
        assert "the task queue is unreachable" in page
        assert NOT_SENT in page

        # Back: the command sends it (a worker would then write it), and only once.
        broker.start()
        out = StringIO()
        call_command("resend_tasks", project.slug, stdout=out)
        assert "sent 1 task(s); 0 still unsent" in out.getvalue()
        snapshot.refresh_from_db()
        assert not snapshot.unsent
        assert dispatch.resend_unsent(project) == (0, 0)
        queued = redis.Redis(port=broker.port).lrange("celery", 0, -1)
        assert len(queued) == 1
        assert b"webapp.run_export" in queued[0]


def test_two_resends_at_once_send_a_row_once(tmp_path):
    """The row is locked while it is sent (SKIP LOCKED): a second caller passes over it."""
    import threading

    from django.db import connection, transaction

    project = ProjectFactory(slug="unsent-twice")
    job = ImportJob.objects.create(project=project, path="/nonexistent.jsonl", unsent=True)
    with PrivateRedis(tmp_path / "redis") as broker, celery_broker(broker.url(0)):
        results: list[tuple[int, int]] = []
        with transaction.atomic():  # this test holds the row, as a first resend would while it sends
            ImportJob.objects.select_for_update().get(pk=job.pk)

            def other() -> None:
                results.append(dispatch.resend_unsent(project))
                connection.close()

            thread = threading.Thread(target=other)
            thread.start()
            thread.join(timeout=30)
        assert results == [(0, 0)]
        assert redis.Redis(port=broker.port).llen("celery") == 0
        assert dispatch.resend_unsent(project) == (1, 0)
        assert redis.Redis(port=broker.port).llen("celery") == 1

"""Login rate limiting (webapp/ratelimit_login.py), on the real login page and the real cache (Redis here).

After LOGIN_FAILURES_PER_USERNAME failed logins for a username, or LOGIN_FAILURES_PER_IP from an address,
within LOGIN_FAILURE_WINDOW_S, every attempt is refused with 429 and a message, the right password
included, until the window (which began with the first failure) has passed; a successful login clears
its username's count. Each test uses its own usernames and addresses (the cache outlives the test's
database transaction), and removes its counters afterwards.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client

from tests.factories import UserFactory
from webapp import ratelimit_login

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
WRONG = "not-the-password"


@pytest.fixture
def run_id(settings: Any) -> Iterator[str]:
    """A suffix for this test's usernames, cheap hashing, and the default limits."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.LOGIN_FAILURES_PER_USERNAME = 10
    settings.LOGIN_FAILURES_PER_IP = 50
    settings.LOGIN_FAILURE_WINDOW_S = 15 * 60
    settings.TRUSTED_PROXY_COUNT = 0
    suffix = secrets.token_hex(4)
    cache = ratelimit_login._cache()  # now: a test may replace _cache
    used: list[tuple[str, str]] = []
    original = ratelimit_login._keys

    def tracked(kind: str, value: str) -> tuple[str, str]:
        used.append((kind, value))
        return original(kind, value)

    ratelimit_login._keys = tracked  # type: ignore[assignment]
    try:
        yield suffix
    finally:
        ratelimit_login._keys = original  # type: ignore[assignment]
        for kind, value in set(used):
            cache.delete_many(list(original(kind, value)))


def address() -> str:
    """A documentation address (RFC 5737) of this test alone."""
    return f"203.0.113.{secrets.randbelow(250) + 1}-{secrets.token_hex(3)}"


def attempt(client: Client, username: str, password: str) -> Any:
    return client.post("/login/", {"username": username, "password": password})


def logged_in(client: Client) -> bool:
    return SESSION_KEY in client.session


def test_the_eleventh_attempt_after_ten_failures_is_refused_even_with_the_right_password(run_id: str) -> None:
    name = f"alice-{run_id}"
    UserFactory(username=name)
    client = Client(REMOTE_ADDR=address())
    for _ in range(10):
        response = attempt(client, name, WRONG)
        assert response.status_code == 200  # the form again, with its error
    refused = attempt(client, name, PASSWORD)
    assert refused.status_code == 429
    assert not logged_in(client)
    page = refused.content.decode()
    assert "Too many failed login attempts" in page
    assert "Try again in 15 minutes" in page
    assert 1 <= int(refused["Retry-After"]) <= 15 * 60
    assert 'name="password"' in page  # still the login page
    # From another address too: the username is what is under attack.
    assert attempt(Client(REMOTE_ADDR=address()), name, PASSWORD).status_code == 429


def test_another_user_is_not_affected(run_id: str) -> None:
    alice, bob = f"alice-{run_id}", f"bob-{run_id}"
    UserFactory(username=alice)
    UserFactory(username=bob)
    ip = address()
    client = Client(REMOTE_ADDR=ip)
    for _ in range(10):
        attempt(client, alice, WRONG)
    assert attempt(client, alice, PASSWORD).status_code == 429
    other = Client(REMOTE_ADDR=ip)  # the same address, below its own limit
    response = attempt(other, bob, PASSWORD)
    assert response.status_code == 302
    assert logged_in(other)


def test_the_refusal_ends_when_the_window_has_passed(run_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"carol-{run_id}"
    UserFactory(username=name)
    client = Client(REMOTE_ADDR=address())
    start = ratelimit_login.clock()
    for _ in range(10):
        attempt(client, name, WRONG)
    monkeypatch.setattr(ratelimit_login, "clock", lambda: start + 15 * 60 - 5)
    almost = attempt(client, name, PASSWORD)
    assert almost.status_code == 429
    assert int(almost["Retry-After"]) <= 6
    monkeypatch.setattr(ratelimit_login, "clock", lambda: start + 15 * 60 + 1)
    assert attempt(client, name, PASSWORD).status_code == 302
    assert logged_in(client)


def test_the_window_is_the_cache_keys_ttl(run_id: str) -> None:
    """In real time the counters go away with their keys: Redis expires them at the end of the window."""
    ip = address()
    ratelimit_login.record_failure(f"dave-{run_id}", ip)
    cache = ratelimit_login._cache()
    count_key, start_key = ratelimit_login._keys(ratelimit_login.USERNAME, f"dave-{run_id}")
    client = cache._cache.get_client(write=False)  # type: ignore[attr-defined]
    for key in (count_key, start_key):
        ttl = client.ttl(cache.make_and_validate_key(key))
        assert 15 * 60 - 5 <= ttl <= 15 * 60


def test_a_successful_login_clears_the_usernames_count(run_id: str) -> None:
    name = f"erin-{run_id}"
    UserFactory(username=name)
    ip = address()
    for _ in range(9):
        attempt(Client(REMOTE_ADDR=ip), name, WRONG)
    assert attempt(Client(REMOTE_ADDR=ip), name, PASSWORD).status_code == 302
    for _ in range(9):
        attempt(Client(REMOTE_ADDR=ip), name, WRONG)
    assert attempt(Client(REMOTE_ADDR=ip), name, PASSWORD).status_code == 302  # 9 since the success: allowed


def test_usernames_count_whatever_their_case(run_id: str) -> None:
    name = f"frank-{run_id}"
    UserFactory(username=name)
    client = Client(REMOTE_ADDR=address())
    for k in range(10):
        attempt(client, name.upper() if k % 2 else name, WRONG)
    assert attempt(client, name, PASSWORD).status_code == 429


def test_too_many_failures_from_one_address_block_it_for_every_username(run_id: str, settings: Any) -> None:
    settings.LOGIN_FAILURES_PER_IP = 5
    UserFactory(username=f"gina-{run_id}")
    ip = address()
    for k in range(5):
        attempt(Client(REMOTE_ADDR=ip), f"guess-{k}-{run_id}", WRONG)
    assert attempt(Client(REMOTE_ADDR=ip), f"gina-{run_id}", PASSWORD).status_code == 429
    elsewhere = Client(REMOTE_ADDR=address())
    assert attempt(elsewhere, f"gina-{run_id}", PASSWORD).status_code == 302


def test_behind_a_proxy_the_forwarded_address_counts_and_forged_entries_do_not(run_id: str, settings: Any) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    settings.LOGIN_FAILURES_PER_IP = 3
    UserFactory(username=f"hank-{run_id}")
    proxy, client_ip = "10.0.0.2", address()
    for k in range(3):  # the client forges a different first entry each time; the proxy appends the real one
        forwarded = f"198.51.100.{k}, {client_ip}"
        Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=forwarded).post(
            "/login/", {"username": f"x{k}-{run_id}", "password": WRONG}
        )
    blocked = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=f"1.2.3.4, {client_ip}")
    assert attempt(blocked, f"hank-{run_id}", PASSWORD).status_code == 429
    someone_else = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=address())
    assert attempt(someone_else, f"hank-{run_id}", PASSWORD).status_code == 302


def test_the_admin_sites_login_is_no_way_around_the_limit(run_id: str) -> None:
    name = f"root-{run_id}"
    UserFactory(username=name, is_staff=True, is_superuser=True)
    ip = address()
    for _ in range(10):
        Client(REMOTE_ADDR=ip).post("/admin/login/", {"username": name, "password": WRONG})
    admin = Client(REMOTE_ADDR=address())
    response = admin.post("/admin/login/", {"username": name, "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 200  # the admin's login form again: the right password did not count
    assert not logged_in(admin)
    assert attempt(Client(REMOTE_ADDR=address()), name, PASSWORD).status_code == 429  # shared with /login/


def test_when_the_cache_fails_logins_go_on_and_a_warning_is_logged(
    run_id: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"ivan-{run_id}"
    UserFactory(username=name)

    class Broken:
        def __getattr__(self, attr: str) -> Any:
            raise ConnectionError("redis is down")

    monkeypatch.setattr(ratelimit_login, "_cache", lambda: Broken())
    client = Client(REMOTE_ADDR=address())
    with caplog.at_level(logging.WARNING, logger="webapp.ratelimit_login"):
        assert attempt(client, name, WRONG).status_code == 200
        assert attempt(client, name, PASSWORD).status_code == 302
    assert any("the cache failed" in r.getMessage() for r in caplog.records)


def test_the_limit_is_counted_in_a_shared_cache() -> None:
    from django.conf import settings

    alias = settings.LOGIN_RATELIMIT_CACHE
    backend = settings.CACHES[alias]["BACKEND"]
    if settings.CACHES["default"]["BACKEND"].endswith("DummyCache"):  # no Redis: this process's memory
        assert backend.endswith("LocMemCache")
    else:
        assert backend == settings.CACHES["default"]["BACKEND"]
        assert settings.CACHES[alias]["LOCATION"] == settings.CACHES["default"]["LOCATION"]

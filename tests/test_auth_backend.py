"""webapp.auth.ModelBackend: Django's checks on every request, with sessions from before it still valid."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import SESSION_KEY, backends, user_login_failed
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
LEGACY = "django.contrib.auth.backends.ModelBackend"


def log_in(client: Client, username: str, password: str) -> int:
    page = client.get("/login/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    fields = {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password}
    return client.post("/login/", fields).status_code


def test_a_login_through_the_form_uses_the_fast_backend_and_opens_the_pages():
    UserFactory(username="ann")
    client = Client(enforce_csrf_checks=True)
    assert log_in(client, "ann", PASSWORD) == 302
    assert client.session["_auth_user_backend"] == "webapp.auth.ModelBackend"
    assert client.get("/").status_code == 200


def test_a_session_made_with_djangos_model_backend_still_works():
    user = UserFactory(username="old")
    client = Client()
    client.force_login(user, backend=LEGACY)
    assert client.get("/").status_code == 200


def test_a_wrong_password_is_refused_and_checked_once(monkeypatch):
    UserFactory(username="ann")
    checks = []
    original = backends.ModelBackend.authenticate

    def counted(self, *args, **kwargs):
        checks.append(type(self).__module__)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(backends.ModelBackend, "authenticate", counted)
    failed = []

    def on_failure(**kwargs):
        failed.append(kwargs)

    user_login_failed.connect(on_failure)
    try:
        client = Client()
        assert log_in(client, "ann", "wrong password!") == 200
        assert log_in(client, "nobody", PASSWORD) == 200
    finally:
        user_login_failed.disconnect(on_failure)
    assert SESSION_KEY not in client.session
    assert checks == ["webapp.auth", "webapp.auth"]  # never the legacy backend too
    assert len(failed) == 2


@pytest.mark.parametrize("backend", ["webapp.auth.ModelBackend", LEGACY])
def test_a_deactivated_user_is_logged_out(backend):
    user = UserFactory(username="ann")
    client = Client()
    client.force_login(user, backend=backend)
    user.is_active = False
    user.save()
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_password_change_ends_the_other_sessions():
    user = UserFactory(username="ann")
    client = Client()
    client.force_login(user)
    assert client.get("/").status_code == 200
    user.set_password("another-long-password")
    user.save()
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_session_naming_a_missing_user_is_anonymous():
    user = UserFactory(username="ann")
    client = Client()
    client.force_login(user)
    session = client.session
    session[SESSION_KEY] = "987654321"
    session.save()
    assert client.get("/").status_code == 302

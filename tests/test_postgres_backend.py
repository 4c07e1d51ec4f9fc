"""The database backend's health check (webapp/postgres/base.py): free for a live connection, and still
right about a connection the server ended or one with a message waiting."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from webapp.postgres.base import DatabaseWrapper

pytestmark = pytest.mark.django_db


@pytest.fixture
def wrapper(db: None) -> Iterator[BaseDatabaseWrapper]:
    """A second connection to the test database, outside the test's transaction (autocommit, idle)."""
    conn = connections.create_connection("default")
    conn.ensure_connection()
    yield conn
    conn.close()


def _protocol_messages(conn: BaseDatabaseWrapper) -> tuple[bool, bytes]:
    """is_usable()'s answer and the protocol messages it exchanged with the server (libpq's trace)."""
    pgconn = conn.connection.pgconn
    with tempfile.TemporaryFile() as trace:
        pgconn.trace(trace.fileno())
        try:
            usable = conn.is_usable()
        finally:
            pgconn.untrace()
        trace.seek(0)
        return usable, trace.read()


def _wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_project_uses_this_backend(wrapper: BaseDatabaseWrapper) -> None:
    assert isinstance(wrapper, DatabaseWrapper)
    assert wrapper.vendor == "postgresql"


def test_a_live_idle_connection_is_usable_without_a_query(wrapper: BaseDatabaseWrapper) -> None:
    usable, messages = _protocol_messages(wrapper)
    assert usable is True
    assert messages == b""


def test_a_connection_the_server_ended_is_not_usable(wrapper: BaseDatabaseWrapper) -> None:
    pid = wrapper.connection.info.backend_pid
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert cursor.fetchone()[0] is True
    # The server's goodbye reaches the socket shortly after.
    _wait_until(lambda: not wrapper.is_usable())
    wrapper.close()
    wrapper.ensure_connection()  # and Django's next connection works
    assert wrapper.is_usable() is True


def test_a_message_waiting_on_a_live_connection_is_checked_with_a_query(wrapper: BaseDatabaseWrapper) -> None:
    with wrapper.connection.cursor() as cursor:
        cursor.execute("LISTEN hp_backend_test")
    with connections.create_connection("default").cursor() as other:
        other.execute("NOTIFY hp_backend_test")
        other.connection.close()
    time.sleep(0.2)  # the notification is now waiting on the idle connection's socket
    usable, messages = _protocol_messages(wrapper)
    assert usable is True
    assert b"SELECT 1" in messages


def test_a_connection_inside_a_transaction_is_checked_with_a_query(wrapper: BaseDatabaseWrapper) -> None:
    wrapper.connection.execute("BEGIN")
    usable, messages = _protocol_messages(wrapper)
    assert usable is True
    assert b"SELECT 1" in messages
    wrapper.connection.execute("ROLLBACK")


def test_a_closed_connection_is_not_usable(wrapper: BaseDatabaseWrapper) -> None:
    wrapper.connection.close()
    assert wrapper.is_usable() is False


def test_without_poll_the_socket_is_asked_with_select(
    wrapper: BaseDatabaseWrapper, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Windows has no select.poll: the same answers through select.select.
    monkeypatch.delattr("select.poll")
    usable, messages = _protocol_messages(wrapper)
    assert usable is True
    assert messages == b""
    pid = wrapper.connection.info.backend_pid
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    _wait_until(lambda: not wrapper.is_usable())

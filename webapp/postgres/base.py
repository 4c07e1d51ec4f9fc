"""PostgreSQL: Django's backend, with a connection health check that needs no round trip.

Persistent connections (CONN_MAX_AGE) are checked before a request's first query (CONN_HEALTH_CHECKS).
Django's check runs `SELECT 1`: a round trip and one of the eight or nine statements of a submit in the
annotation workspace (0.06-0.10 ms of the web process's CPU and 0.1-0.17 ms in all, measured here).
An idle connection has nothing to read from its socket; when the server closes it (a restart, an
administrator ending it, the server going down) the socket turns readable: the server's goodbye message,
or the end of the stream. So this check asks the socket (poll with no wait) and runs `SELECT 1` only
where something has arrived, or where the connection is not idle, to tell a notice from a dead
connection. A connection that dies without a word (a network cut) passes this check; its first query
then fails, the request is answered 503 (webapp/middleware_db.py) and the connection is closed at the
end of it.
"""

from __future__ import annotations

import select

import psycopg
from django.db.backends.postgresql import base
from psycopg import pq


def _readable(fd: int) -> bool:
    """Whether the socket has something to read (or has failed), without waiting."""
    if hasattr(select, "poll"):  # no descriptor limit, unlike select()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    readable, _, failed = select.select([fd], [], [fd], 0)  # Windows has no poll()
    return bool(readable or failed)


class DatabaseWrapper(base.DatabaseWrapper):
    def is_usable(self) -> bool:
        conn = self.connection
        if conn is None or conn.closed or conn.broken:
            return False
        pgconn = conn.pgconn
        if pgconn.status != pq.ConnStatus.OK:
            return False
        if pgconn.transaction_status != pq.TransactionStatus.IDLE:
            return bool(super().is_usable())
        try:
            arrived = _readable(pgconn.socket)
        except (OSError, ValueError, psycopg.Error):
            return False
        return not arrived or bool(super().is_usable())

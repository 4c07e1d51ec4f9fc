"""A database that does not answer gets a 503 that says so, not a bare 500.

While PostgreSQL restarts (or refuses connections, or cancels a statement for a deadlock or a
serialization failure) Django raises OperationalError or InterfaceError. Every one of those is worth
trying again, so the answer is "503 Service Unavailable" with a Retry-After header and a message telling
the person that what they sent was NOT saved and to send it again:

- htmx requests get a small fragment (htmx does not swap a 5xx: annotate.js shows the message in the
  page's status line and leaves the form, with the annotator's answers, as it was);
- /api/ requests get JSON ({"detail": ..., "retryable": true});
- anything else gets a plain page.

The page is built without the database (no templates that read the user, no session). An error raised by
the view comes through process_exception; one raised by another middleware (the session or the user,
read before the view runs) has already been turned into a 500 by Django, so the got_request_exception
signal marks the request and __call__ swaps that 500 for the 503. Put this middleware first in MIDDLEWARE.

Django's persistent connections recover by themselves once the server is back: a connection that saw an
error is closed at the end of its request, and CONN_HEALTH_CHECKS (webapp/config.py) tests a reused one
before its first query (webapp/postgres/base.py).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

log = logging.getLogger(__name__)

DB_ERRORS = (OperationalError, InterfaceError)
RETRY_AFTER_S = 5
MESSAGE = (
    "The database is not answering right now, so this was NOT saved. "
    "Your answers are still in the form: please submit again in a few seconds."
)
PAGE_MESSAGE = "The database is not answering right now, so nothing was saved. Please try again in a few seconds."
_FLAG = "_hybridpref_db_unavailable"
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Try again in a moment · HybridPref</title></head>
<body><main><h1>Try again in a moment</h1><p role="status">{message}</p>
<p><a href="">Reload</a></p></main></body></html>
"""


def unavailable_response(request: HttpRequest) -> HttpResponse:
    """The 503 for a request that the database failed, in the form the client asked for."""
    response: HttpResponse
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": PAGE_MESSAGE, "retryable": True}, status=503)
    elif request.headers.get("HX-Request") == "true":
        # Not swapped by htmx (a 5xx); annotate.js reads the message out of it.
        response = HttpResponse(f'<p class="notice warn" role="status" data-retryable="1">{MESSAGE}</p>', status=503)
    else:
        response = HttpResponse(_PAGE.format(message=PAGE_MESSAGE), status=503)
    response["Retry-After"] = str(RETRY_AFTER_S)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code == 500 and getattr(request, _FLAG, False):
            return unavailable_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, DB_ERRORS):
            return None
        log.warning("%s %s: the database failed, answered 503: %s", request.method, request.path, exception)
        return unavailable_response(request)


def _mark_request(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """A database error outside the view (middleware, session save): flag it for __call__."""
    exception = sys.exc_info()[1]
    if request is not None and isinstance(exception, DB_ERRORS):
        log.warning("%s %s: the database failed, answered 503: %s", request.method, request.path, exception)
        setattr(request, _FLAG, True)


got_request_exception.connect(_mark_request, dispatch_uid="webapp.middleware_db")

"""Login rate limiting: too many failed logins for one username, or from one address, and further attempts
are refused until the window that began with the first failure has passed.

- Every failed authentication (Django's ``user_login_failed`` signal: the login page, the admin site's
  login, any other form that calls ``authenticate``) counts once against its username and its client
  address, in the "ratelimit" cache (Redis where the site has one, so that every web worker shares the
  counts; see settings.LOGIN_RATELIMIT_CACHE).
- The login page (RateLimitedLoginView) answers 429 with a clear message and a Retry-After header once a
  username has LOGIN_FAILURES_PER_USERNAME failures, or an address LOGIN_FAILURES_PER_IP, within
  LOGIN_FAILURE_WINDOW_S seconds; the password is then not even checked (no hashing for an attacker).
- RateLimitBackend, first in AUTHENTICATION_BACKENDS, refuses the same attempts on every other login
  path (the admin site), so none of them is a way around the limit.
- A successful login clears its username's count (not its address's: one address may be a whole office
  behind NAT, and an attacker there must not reset it by logging in to their own account).

The windows are fixed: they start at a key's first failure and end LOGIN_FAILURE_WINDOW_S later (the cache
key's TTL, and ``clock``, which tests may replace). When the cache fails, logins go on unlimited and a
warning is logged: an outage of Redis must not lock everyone out. See docs/operations.md.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import user_logged_in, user_login_failed
from django.contrib.auth.views import LoginView
from django.core.cache import BaseCache, caches
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse

log = logging.getLogger(__name__)

# Seconds since the epoch; tests replace it to move past a window without waiting.
clock: Callable[[], float] = time.time

USERNAME, IP = "user", "ip"


@dataclass(frozen=True)
class Limits:
    per_username: int
    per_ip: int
    window_s: int


def limits() -> Limits:
    return Limits(
        per_username=int(getattr(settings, "LOGIN_FAILURES_PER_USERNAME", 10)),
        per_ip=int(getattr(settings, "LOGIN_FAILURES_PER_IP", 50)),
        window_s=int(getattr(settings, "LOGIN_FAILURE_WINDOW_S", 15 * 60)),
    )


def _cache() -> BaseCache:
    return caches[getattr(settings, "LOGIN_RATELIMIT_CACHE", "default")]


def client_ip(request: HttpRequest | None) -> str:
    """The client's address: REMOTE_ADDR, or with TRUSTED_PROXY_COUNT proxies in front, the X-Forwarded-For
    entry the outermost trusted proxy added (entries further left are the client's to forge)."""
    if request is None:
        return ""
    meta = getattr(request, "META", {})
    proxies = int(getattr(settings, "TRUSTED_PROXY_COUNT", 0))
    if proxies > 0:
        hops = [hop.strip() for hop in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies][:100]
    return str(meta.get("REMOTE_ADDR", "") or "")[:100]


def normalize_username(username: Any) -> str:
    return str(username or "").strip().casefold()


def _keys(kind: str, value: str) -> tuple[str, str]:
    digest = hashlib.sha256(f"{kind}:{value}".encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"login-fail:{digest}:n", f"login-fail:{digest}:t"


def _subjects(username: Any, ip: str) -> list[tuple[str, str, int]]:
    """(kind, value, limit) for each counter an attempt touches."""
    lim = limits()
    out = []
    name = normalize_username(username)
    if name:
        out.append((USERNAME, name, lim.per_username))
    if ip:
        out.append((IP, ip, lim.per_ip))
    return out


def _state(cache: BaseCache, kind: str, value: str, window_s: int) -> tuple[int, float | None]:
    """(failures, window start) of one counter; (0, None) once its window has passed."""
    count_key, start_key = _keys(kind, value)
    found = cache.get_many([count_key, start_key])
    count = int(found.get(count_key) or 0)
    start = found.get(start_key)
    if start is not None and clock() - float(start) >= window_s:
        cache.delete_many([count_key, start_key])
        return 0, None
    return count, (float(start) if start is not None else None)


def retry_after(username: Any, ip: str) -> int | None:
    """Seconds until the attempt may be made, or None when it may be made now."""
    window_s = limits().window_s
    wait: float | None = None
    try:
        cache = _cache()
        for kind, value, limit in _subjects(username, ip):
            count, start = _state(cache, kind, value, window_s)
            if count >= limit:
                left = window_s - (clock() - start) if start is not None else window_s
                wait = max(wait or 0.0, left, 1.0)
    except Exception:  # the cache is down: do not lock everyone out
        log.warning("login rate limit: the cache failed; not limiting", exc_info=True)
        return None
    return None if wait is None else math.ceil(wait)


def record_failure(username: Any, ip: str) -> None:
    window_s = limits().window_s
    try:
        cache = _cache()
        for kind, value, limit in _subjects(username, ip):
            _state(cache, kind, value, window_s)  # drops a counter whose window has passed
            count_key, start_key = _keys(kind, value)
            cache.add(start_key, clock(), timeout=window_s)
            cache.add(count_key, 0, timeout=window_s)
            try:
                count = cache.incr(count_key)
            except ValueError:  # expired between add and incr
                cache.add(count_key, 1, timeout=window_s)
                count = 1
            if count == limit:
                what = f"username {normalize_username(username)[:150]!r}" if kind == USERNAME else f"address {ip}"
                log.warning("login rate limit: %d failed logins for %s; refusing it for now", count, what)
    except Exception:
        log.warning("login rate limit: the cache failed; failure not counted", exc_info=True)


def reset_username(username: Any) -> None:
    name = normalize_username(username)
    if not name:
        return
    try:
        _cache().delete_many(list(_keys(USERNAME, name)))
    except Exception:
        log.warning("login rate limit: the cache failed; count not reset", exc_info=True)


@receiver(user_login_failed, dispatch_uid="webapp.ratelimit_login.failed")
def _on_login_failed(sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kw: Any) -> None:
    if request is None:  # authenticate() outside a request (a command, a test's client.login)
        return
    from django.contrib.auth import get_user_model

    record_failure(credentials.get(get_user_model().USERNAME_FIELD, credentials.get("username")), client_ip(request))


@receiver(user_logged_in, dispatch_uid="webapp.ratelimit_login.logged_in")
def _on_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kw: Any) -> None:
    reset_username(user.get_username())


def refusal_message(wait_s: int) -> str:
    minutes = max(1, math.ceil(wait_s / 60))
    return (
        "Too many failed login attempts for this username or from this address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )


class RateLimitBackend:
    """Authenticates nobody; stops authentication (PermissionDenied) of an attempt over the limit.

    Deliberately not a BaseBackend: without get_user it is never a session's backend, and the test
    client's force_login and Django's permission checks pass it by.
    """

    def authenticate(self, request: Any, username: str | None = None, password: str | None = None, **kw: Any) -> Any:
        if request is None:
            return None
        if retry_after(username, client_ip(request)) is not None:
            raise PermissionDenied("too many failed logins")
        return None


class RateLimitedLoginView(LoginView):
    """Django's LoginView, answering 429 (the form, a message, Retry-After) to an attempt over the limit."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        wait = retry_after(request.POST.get("username", ""), client_ip(request))
        if wait is None:
            return super().post(request, *args, **kwargs)
        messages.error(request, refusal_message(wait))
        context = self.get_context_data(form=self.form_class(request=request), rate_limited=True)
        response = self.render_to_response(context, status=429)
        response["Retry-After"] = str(wait)
        return response

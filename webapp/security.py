"""Response headers Django 5.2 does not set itself: Content-Security-Policy and Permissions-Policy.

Django's SecurityMiddleware sends HSTS, X-Content-Type-Options, Referrer-Policy and
Cross-Origin-Opener-Policy, and XFrameOptionsMiddleware X-Frame-Options; this adds the policies from
settings.CONTENT_SECURITY_POLICY and settings.PERMISSIONS_POLICY (empty or "none": not sent). A view
that sets either header itself keeps its own. See docs/operations.md ("Security checks").
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase


def _policy(name: str) -> str:
    value = str(getattr(settings, name, "") or "").strip()
    return "" if value.lower() == "none" else value


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        for header, setting in (
            ("Content-Security-Policy", "CONTENT_SECURITY_POLICY"),
            ("Permissions-Policy", "PERMISSIONS_POLICY"),
        ):
            policy = _policy(setting)
            if policy and header not in response:
                response[header] = policy
        return response

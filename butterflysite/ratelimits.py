"""Rate limits on signing in and uploading, per client IP and per user (or username tried).

Every sign-in surface (the sign-in page, the admin's sign-in page, the API token endpoint) counts
per client IP and per IP + username, never per username alone: a limit on the username alone let
anyone lock its owner out (10 bad attempts from anywhere, and the right password got 429). The
IP + username limit has two windows (a minute, then an hour), so guessing backs off further the
longer it goes on, while the owner, from their own address, still signs in.

Counted with django-ratelimit in the default cache: Redis when REDIS_URL is set (shared by every
web process and dyno), else Django's file cache (one machine). Rates are "count/period" settings
(RATELIMIT_*); an empty rate turns that limit off. When the cache itself is unreachable the
request is let through and a warning logged: an outage of Redis must not lock everyone out.
"""

from __future__ import annotations

import logging
from functools import wraps

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django_ratelimit.core import get_usage

logger = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The address rate limits count. Behind Heroku's router REMOTE_ADDR is the router, and the
    router appends the address that connected to it to X-Forwarded-For: that last entry is the
    one to trust (earlier entries come from the client and can be forged)."""
    if settings.RATELIMIT_TRUST_X_FORWARDED_FOR:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR") or "0.0.0.0"


def _user_key(group, request) -> str:
    user = getattr(request, "user", None)
    return f"user:{user.pk}" if user is not None and user.is_authenticated else f"ip:{client_ip(request)}"


def _username_tried(request) -> str:
    data = getattr(request, "data", None)
    if data is None or not hasattr(data, "get"):
        data = request.POST
    username = data.get("username") if hasattr(data, "get") else None
    return str(username or "").strip().lower()[:150]


def _ip_username_key(group, request) -> str:
    # The account being tried from this address: guessing one password from one address stops,
    # while the owner signing in from elsewhere is not counted with the guesser.
    return f"ip:{client_ip(request)}|username:{_username_tried(request)}"


KEYS = {
    "ip": lambda group, request: f"ip:{client_ip(request)}",
    "user": _user_key,
    "ip_username": _ip_username_key,
    "ip_username_hourly": _ip_username_key,
}

# {key kind: name of the setting holding its rate}, per group of views.
LOGIN_RATES = {
    "ip": "RATELIMIT_LOGIN_IP",
    "ip_username": "RATELIMIT_LOGIN_IP_USERNAME",
    "ip_username_hourly": "RATELIMIT_LOGIN_IP_USERNAME_HOURLY",
}
SIGNUP_RATES = {"ip": "RATELIMIT_LOGIN_IP"}
UPLOAD_RATES = {"ip": "RATELIMIT_UPLOAD_IP", "user": "RATELIMIT_UPLOAD_USER"}
PASSWORD_RESET_RATES = {"ip": "RATELIMIT_PASSWORD_RESET_IP"}
EXPORT_RATES = {"user": "RATELIMIT_EXPORT_USER"}


def seconds_until_allowed(request, group: str, limits: dict[str, str]) -> int | None:
    """Counts this request against each {key kind: rate}; the seconds to wait when one is over
    its rate, else None. Key kinds: "ip", "user" (signed-in user), "ip_username" and
    "ip_username_hourly" (the client IP with the username tried in the form)."""
    if not settings.RATELIMIT_ENABLE:
        return None
    wait = None
    for kind, rate in limits.items():
        if not rate:
            continue
        try:
            usage = get_usage(request, group=f"{group}:{kind}", key=KEYS[kind], rate=rate, increment=True)
        except Exception:  # the cache (Redis) is down: let the request through
            logger.warning("rate limit %s:%s not checked: cache unreachable", group, kind, exc_info=True)
            continue
        if usage and usage["should_limit"]:
            wait = max(wait or 0, max(1, usage["time_left"]))
    return wait


def too_many_requests(request, wait: int, *, api: bool = False):
    message = f"Too many attempts; try again in {wait} seconds."
    if api:
        response = JsonResponse({"detail": message}, status=429)
    else:
        response = render(request, "429.html", {"message": message}, status=429)
    response["Retry-After"] = str(wait)
    return response


def limits_from_settings(rate_settings: dict[str, str]) -> dict[str, str]:
    """{key kind: setting name} -> {key kind: rate}, read per request so settings can change."""
    return {kind: getattr(settings, name) for kind, name in rate_settings.items()}


def rate_limit(group: str, rate_settings: dict[str, str], *, methods=("POST",), api: bool = False):
    """Decorates a view function: requests over a rate get a 429 with Retry-After.
    `rate_settings` is {key kind: name of the setting holding its rate}."""

    def decorator(view):
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if request.method in methods:
                if api and any(KEYS[kind] is _ip_username_key for kind in rate_settings):
                    # The limits read the username from the body: one the API refuses to parse
                    # (ParseError: 400 with its message) is refused here. Other limits (uploads)
                    # count the request before its body is read.
                    request.data  # noqa: B018
                limits = limits_from_settings(rate_settings)
                wait = seconds_until_allowed(request, group, limits)
                if wait is not None:
                    return too_many_requests(request, wait, api=api)
            return view(request, *args, **kwargs)

        return wrapped

    return decorator

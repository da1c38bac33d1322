"""Middleware: a database that is restarting or unreachable answers 503 with Retry-After, not a
500 storm; control characters in parameters answer 400; private pages are never cached."""

import logging
import re

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.shortcuts import render

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


def is_api(request) -> bool:
    return request.path.startswith("/api/")


def service_unavailable(request):
    """The 503 answer: JSON for the API, a page (that touches no database) for browsers."""
    message = "The service is briefly unavailable; please try again in a few seconds."
    if is_api(request):
        response = JsonResponse({"detail": message}, status=503)
    else:
        response = render(request, "503.html", {"message": message}, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailableMiddleware:
    """Views that hit a lost database connection answer 503 (errors raised outside views are
    handled by butterflysite.errors.server_error)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, DATABASE_UNAVAILABLE):
            logger.warning("database unavailable on %s %s: %s", request.method, request.path, exception)
            return service_unavailable(request)
        return None


# C0 control characters and DEL, less tab, line feed and carriage return (which forms may carry).
# PostgreSQL cannot store NUL in text, and none of them belongs in a name, label or filter.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CONTROL_CHARACTER_MESSAGE = "The request contains a control character (such as NUL) in {where}; remove it and try again."


def control_character_in(values) -> bool:
    return any(isinstance(value, str) and CONTROL_CHARACTERS.search(value) for value in values)


def bad_input(request, message: str):
    """400 with a readable message: JSON for the API, a short page for browsers."""
    if is_api(request):
        return JsonResponse({"detail": message}, status=400)
    return render(request, "400.html", {"message": message}, status=400)


class ControlCharacterMiddleware:
    """Refuses a request whose path, query parameters, cookies or form fields carry a control
    character, before any of them reaches a query (a NUL gave a 500 on PostgreSQL). JSON bodies
    are checked by butterflysite.parsers.PlainTextJSONParser, uploaded files by their own checks."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        for where, values in (
            ("the address", [request.path]),
            ("a query parameter", [text for key, items in request.GET.lists() for text in (key, *items)]),
            ("a cookie", [text for item in request.COOKIES.items() for text in item]),
        ):
            if control_character_in(values):
                return bad_input(request, CONTROL_CHARACTER_MESSAGE.format(where=where))
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        # Form fields are read here, after the CSRF check (which reads them too), so the upload
        # handlers in force are the ones the views configure.
        if request.method == "POST" and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            # A body Django refuses to parse (too many files, malformed) raises here: a 400 from
            # butterflysite.errors.bad_request, as when the CSRF check reads it first.
            fields = [text for key, items in request.POST.lists() for text in (key, *items)]
            if control_character_in(fields):
                return bad_input(request, CONTROL_CHARACTER_MESSAGE.format(where="a form field"))
        return None


# Pages of a signed-in user and every API answer are private: no cache (browser or proxy) keeps them.
NO_STORE_PREFIXES = ("/api/", "/accounts/", "/admin/")


class PrivacyHeadersMiddleware:
    """Permissions-Policy on every response; `Cache-Control: no-store` on the API, the account and
    sign-in pages, the admin and every page of a signed-in user, unless the view set its own."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault("Permissions-Policy", settings.PERMISSIONS_POLICY)
        user = getattr(request, "user", None)
        private = request.path.startswith(NO_STORE_PREFIXES) or (user is not None and user.is_authenticated)
        if private and "Cache-Control" not in response:
            response["Cache-Control"] = "no-store"
        return response

"""A database that is restarting or unreachable answers 503 with Retry-After, not a 500 storm."""

import logging

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

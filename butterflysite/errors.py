"""Error views (handler400, handler500): the API always answers JSON, pages stay readable."""

import sys

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import JsonResponse
from django.views import defaults

from butterflysite.middleware import DATABASE_UNAVAILABLE, is_api, service_unavailable


def _too_many_files_message() -> str:
    return f"Upload at most {settings.UPLOAD_MAX_FILES} photos at once."


def bad_request(request, exception=None):
    # Django refuses a request with more than DATA_UPLOAD_MAX_NUMBER_FILES files while parsing it
    # (often in the CSRF middleware, before any view runs): say so where the user uploaded.
    if isinstance(exception, TooManyFilesSent):
        if is_api(request):
            return JsonResponse({"detail": _too_many_files_message()}, status=400)
        from classifier.views import upload_form_error

        return upload_form_error(request, _too_many_files_message())
    if isinstance(exception, RequestDataTooBig):
        if is_api(request):
            return JsonResponse({"detail": "The request is too large."}, status=413)
        return defaults.bad_request(request, exception)
    if is_api(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return defaults.bad_request(request, exception)


def server_error(request):
    """A lost database connection (raised anywhere) answers 503 with Retry-After; other errors
    keep Django's 500 (JSON for the API)."""
    error = sys.exc_info()[1]
    if isinstance(error, DATABASE_UNAVAILABLE):
        return service_unavailable(request)
    if is_api(request):
        return JsonResponse({"detail": "Server error."}, status=500)
    return defaults.server_error(request)

"""JSON API for scripts. Thin: authenticate, call a selector or service, serialize."""

from django.conf import settings
from django.contrib.auth import authenticate
from django.urls import reverse
from django.utils.decorators import method_decorator
from rest_framework import status
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from butterflysite.ratelimits import LOGIN_RATES, UPLOAD_RATES, rate_limit
from classifier import selectors, services


def _detail_url(request, photo):
    return request.build_absolute_uri(reverse("classifier_api:photo_detail", args=[photo.pk]))


def photo_summary(request, photo) -> dict:
    return {"id": photo.pk, "status": photo.status, "url": _detail_url(request, photo)}


def photo_representation(request, photo) -> dict:
    results = selectors.photo_results(photo)
    return {
        "id": photo.pk,
        "status": photo.status,
        "url": _detail_url(request, photo),
        "created": photo.created_at.isoformat(),
        "width": photo.width,
        "height": photo.height,
        "sha256": photo.sha256,
        "label": photo.label or None,
        "failure_reason": photo.failure_reason or None,
        "agreement": results.agreement or None,
        "unsure": results.unsure,
        "predictions": [
            {
                "model": m.model,
                "version": m.version,
                "backbone": m.backbone,
                "default": m.is_default,
                "top": [{"label": t["label"], "probability": t["probability"]} for t in m.top],
                "unknown": m.unknown,
                "latency_ms": m.latency_ms,
            }
            for m in results.models
        ],
    }


class TokenView(APIView):
    """POST {"username", "password"} -> {"token"}."""

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    @method_decorator(rate_limit("login", LOGIN_RATES, api=True))
    def post(self, request):
        data = request.data if hasattr(request.data, "get") else {}
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            return Response({"detail": 'Send JSON {"username": ..., "password": ...}.'}, status=400)
        user = authenticate(request, username=username, password=password)
        if user is None or not user.is_active:
            return Response({"detail": "Unable to sign in with that username and password."}, status=400)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"token": token.key})


class PhotoListCreateView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    def get(self, request):
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(selectors.photo_list_for_user(request.user), request, view=self)
        return paginator.get_paginated_response([photo_representation(request, photo) for photo in page])

    @method_decorator(rate_limit("upload", UPLOAD_RATES, api=True))
    def post(self, request):
        limit = settings.UPLOAD_MAX_BYTES + 64 * 1024
        if int(request.META.get("CONTENT_LENGTH") or 0) > limit:
            return Response({"detail": f"The upload is larger than {settings.UPLOAD_MAX_BYTES // (1024 * 1024)} MB."}, status=413)
        uploads = request.FILES.getlist("image")
        if len(uploads) != 1:
            return Response({"detail": 'Send exactly one file in the multipart field "image".'}, status=400)
        try:
            photo = services.photo_create(owner=request.user, upload=uploads[0])
        except services.UploadTooLarge as error:
            return Response({"detail": error.messages[0]}, status=413)
        except services.UploadError as error:
            return Response({"detail": error.messages[0]}, status=400)
        return Response(photo_summary(request, photo), status=status.HTTP_202_ACCEPTED)


class PhotoDetailView(APIView):
    def get(self, request, photo_id):
        photo = selectors.photo_get_for_user(request.user, photo_id)
        return Response(photo_representation(request, photo))

    def delete(self, request, photo_id):
        photo = selectors.photo_get_for_user(request.user, photo_id)
        services.photo_delete(photo=photo)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        parts = []
        for key, value in detail.items():
            text = _flatten(value)
            parts.append(text if key in ("non_field_errors", "detail") else f"{key}: {text}")
        return " ".join(parts)
    if isinstance(detail, (list, tuple)):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


def api_exception_handler(exc, context):
    """Every error is {"detail": "<readable message>"}."""
    response = exception_handler(exc, context)
    if response is not None:
        if isinstance(exc, DRFValidationError) or not (isinstance(response.data, dict) and set(response.data) == {"detail"}):
            response.data = {"detail": _flatten(response.data)}
        else:
            response.data = {"detail": str(response.data["detail"])}
    return response

"""JSON API for scripts. Thin: authenticate, call a selector or service, serialize."""

from django.conf import settings
from django.contrib.auth import authenticate
from django.urls import reverse
from django.utils.decorators import method_decorator
from rest_framework import status
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from accounts import selectors as account_selectors
from accounts import services as account_services
from butterflysite.parsers import PlainTextJSONParser
from butterflysite.ratelimits import LOGIN_RATES, UPLOAD_RATES, rate_limit
from classifier import selectors, services


def _detail_url(request, photo):
    return request.build_absolute_uri(reverse("classifier_api:photo_detail", args=[photo.pk]))


def photo_summary(request, photo) -> dict:
    return {"id": photo.pk, "status": photo.status, "url": _detail_url(request, photo)}


def photo_representation(request, photo) -> dict:
    results = selectors.photo_results(photo)
    answer = selectors.photo_answer(photo)
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
        "identification": answer.as_api() if answer else None,
        "agreement": results.agreement or None,
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
    """POST {"username", "password"} -> {"token", "id", "expiry"}: a new token, shown only here
    (the database keeps its SHA-512 digest), valid until `expiry` or until revoked."""

    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [PlainTextJSONParser, FormParser, MultiPartParser]

    @method_decorator(rate_limit("login", LOGIN_RATES, api=True))
    def post(self, request):
        data = request.data if hasattr(request.data, "get") else {}
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
            return Response({"detail": 'Send JSON {"username": ..., "password": ...}.'}, status=400)
        user = authenticate(request, username=username, password=password)
        if user is None or not user.is_active:
            return Response({"detail": "Unable to sign in with that username and password."}, status=400)
        instance, token = account_services.api_token_create(user=user)
        response = Response({"token": token, **account_selectors.api_token_representation(instance)})
        response["Cache-Control"] = "no-store"  # a credential: no cache may keep it
        return response


class TokenListView(APIView):
    """GET: the caller's tokens (id, created, expiry, current); never the tokens themselves."""

    def get(self, request):
        current = request.auth if isinstance(request.auth, account_selectors.AuthToken) else None
        tokens = account_selectors.api_tokens_for_user(request.user)
        return Response([account_selectors.api_token_representation(token, current=current) for token in tokens])


class TokenDetailView(APIView):
    """DELETE: revokes one of the caller's tokens by its id."""

    def delete(self, request, token_id):
        if not account_services.api_token_revoke(user=request.user, token_id=token_id):
            return Response({"detail": "You have no token with that id."}, status=404)
        return Response(status=status.HTTP_204_NO_CONTENT)


class TokenLogoutView(APIView):
    """POST with a token: revokes that token (signing out a script). {"all": true} revokes every
    token of the user."""

    def post(self, request):
        everything = hasattr(request.data, "get") and request.data.get("all") in (True, "true", "1")
        if everything:
            account_services.api_tokens_revoke_all(user=request.user)
        elif isinstance(request.auth, account_selectors.AuthToken):
            account_services.api_token_revoke(user=request.user, token_id=request.auth.token_key)
        else:
            return Response({"detail": 'Sign out with the token to revoke, or send {"all": true}.'}, status=400)
        return Response(status=status.HTTP_204_NO_CONTENT)


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

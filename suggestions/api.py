"""POST /api/photos/<id>/suggestion/ {"label"}: the owner's "Not right?" from a script."""

from django.core.exceptions import ValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier import selectors as photo_selectors
from suggestions import services
from suggestions.selectors import suggestion_label_name


class PhotoSuggestionView(APIView):
    def post(self, request, photo_id):
        photo = photo_selectors.photo_get_for_user(request.user, photo_id)  # 404 for another user's photo
        label = request.data.get("label") if hasattr(request.data, "get") else None
        try:
            suggestion = services.suggestion_create(photo=photo, user=request.user, label=label)
        except ValidationError as error:
            return Response({"detail": " ".join(error.messages)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {
                "id": suggestion.pk,
                "photo": photo.pk,
                "label": suggestion.label,
                "name": suggestion_label_name(suggestion.label),
                "created": suggestion.created_at.isoformat(),
            },
            status=status.HTTP_201_CREATED,
        )

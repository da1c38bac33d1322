"""The "Not right?" form on a photo's page."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from classifier import selectors as photo_selectors
from suggestions import services
from suggestions.selectors import suggestion_label_name


@login_required
@require_POST
def suggestion_create(request, photo_id):
    photo = photo_selectors.photo_get_for_user(request.user, photo_id)
    try:
        suggestion = services.suggestion_create(photo=photo, user=request.user, label=request.POST.get("label", ""))
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request,
            f"Thanks: you said “{suggestion_label_name(suggestion.label)}”. Staff will look at this photo; "
            "their decision will show here.",
        )
    return redirect("classifier:photo_detail", photo_id=photo.pk)

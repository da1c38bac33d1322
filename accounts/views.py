"""Account pages: API tokens, the data export, deleting the account. Thin: a selector or a service."""

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import FileResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts import selectors, services
from accounts.forms import AccountDeleteForm
from butterflysite.ratelimits import EXPORT_RATES, rate_limit
from classifier.api import photo_representation


def _account_page(request, *, new_token=None, status=200):
    context = {"tokens": selectors.api_tokens_for_user(request.user), "new_token": new_token}
    return render(request, "accounts/account.html", context, status=status)


@login_required
def account(request):
    return _account_page(request)


@login_required
@require_POST
def token_create(request):
    # Shown once, on this answer (no-store: butterflysite.middleware); only its digest is kept.
    _, token = services.api_token_create(user=request.user)
    return _account_page(request, new_token=token)


@login_required
@require_POST
def token_revoke(request, token_id):
    if services.api_token_revoke(user=request.user, token_id=token_id):
        messages.success(request, "Token revoked: scripts using it can no longer sign in.")
    else:
        messages.error(request, "You have no token with that id.")
    return redirect("accounts:account")


@login_required
@require_http_methods(["GET", "POST"])
@rate_limit("export", EXPORT_RATES, methods=("GET", "POST"))
def export(request):
    """A zip of the user's originals and answers.json (predictions and labels per photo)."""
    archive = selectors.account_export_file(request.user, photo_answers=lambda photo: photo_representation(request, photo))
    filename = f"butterflysite-{request.user.get_username()}-{timezone.now():%Y%m%d}.zip"
    return FileResponse(archive, as_attachment=True, filename=filename, content_type="application/zip")


@login_required
@require_http_methods(["GET", "POST"])
def delete(request):
    form = AccountDeleteForm(request.POST or None)
    if form.is_bound and form.is_valid():
        user = request.user
        try:
            services.account_delete(user=user, password=form.cleaned_data["password"])
        except services.WrongPassword as error:
            form.add_error("password", str(error))
        else:
            logout(request)
            messages.success(request, "Your account, your photos and their files are deleted.")
            return redirect("login")
    status = 400 if form.is_bound else 200
    return render(request, "accounts/delete.html", {"form": form, "photo_count": request.user.photos.count()}, status=status)

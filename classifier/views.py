"""Pages. Thin: parse the request, call a selector or a service, render."""

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import SignupForm
from butterflysite.ratelimits import SIGNUP_RATES, UPLOAD_RATES, rate_limit
from classifier import selectors, selectors_species, services
from classifier.files import photo_file_response
from classifier.forms import UploadForm
from ml import species as species_catalogue

GALLERY_PAGE_SIZE = 24


def _photo_context(photo):
    return {
        "photo": photo,
        "results": selectors.photo_results(photo),
        "stale": selectors.photo_is_stale(photo),
    }


@require_http_methods(["GET", "POST"])
@rate_limit("signup", SIGNUP_RATES)
def signup(request):
    if request.user.is_authenticated:
        return redirect("classifier:gallery")
    form = SignupForm(request.POST) if request.method == "POST" else SignupForm()
    if form.is_bound and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        messages.success(request, f"Welcome, {user.username}! Upload your first photo.")
        return redirect("classifier:upload")
    return render(request, "registration/signup.html", {"form": form})


def gallery(request):
    if not request.user.is_authenticated:
        # Signed out: one screen saying what the site does, instead of a bare sign-in form.
        return render(request, "classifier/landing.html",
                      {"featured": selectors_species.species_featured(), "n_species": len(species_catalogue.keys())})
    species = request.GET.get("species", "").strip()
    photos = selectors.photo_list_for_user(request.user, species=species or None)
    page = Paginator(photos, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "classifier/gallery.html",
        {
            "page": page,
            "species": species,
            "species_choices": selectors.photo_species_for_user(request.user),
            "form": UploadForm(),
        },
    )


def upload_form_error(request, message: str, status: int = 400):
    """The upload page with `message` under the file field, for refusals that happen before the
    form is read (butterflysite.errors.bad_request: too many files; butterflysite.request_limits:
    a request over UPLOAD_MAX_REQUEST_BYTES, status 413)."""
    form = UploadForm(data={}, files={})
    form.is_valid()
    form.errors["images"] = form.error_class([message])
    return render(request, "classifier/upload.html", {"form": form}, status=status)


def _upload_done(request, response):
    """static/js/upload.js sends the form itself (for its progress bar) and then goes where the
    redirect points: told as JSON, so the message waits for that page instead of being used up by
    a redirect the script would follow."""
    if request.headers.get("X-Upload-Form") == "1":
        return JsonResponse({"location": response.url})
    return response


@login_required
@require_http_methods(["GET", "POST"])
@rate_limit("upload", UPLOAD_RATES)
def upload(request):
    form = UploadForm(request.POST, request.FILES) if request.method == "POST" else UploadForm()
    if form.is_bound and form.is_valid():
        # One file at a time, so a batch keeps its good files; each refused file is named with why.
        photos, refused = [], []
        for image in form.cleaned_data["images"]:
            try:
                photos += services.photos_create(owner=request.user, uploads=[image])
            except services.UploadError as error:
                refused.append(" ".join(error.messages))
        for reason in refused if not photos else ():
            form.add_error("images", reason)
        if photos:
            if refused:
                messages.warning(request, "Not uploaded: " + " ".join(refused))
            if len(photos) == 1:
                return _upload_done(request, redirect("classifier:photo_detail", photo_id=photos[0].pk))
            # static/js/gallery.js removes the banner once every photo on the page has its answer.
            messages.success(request, f"{len(photos)} photos uploaded; they are being classified.",
                             extra_tags="while-classifying")
            return _upload_done(request, redirect("classifier:gallery"))
    status = 400 if request.method == "POST" else 200
    return render(request, "classifier/upload.html", {"form": form}, status=status)


@login_required
def photo_detail(request, photo_id):
    photo = selectors.photo_get_for_user(request.user, photo_id)
    context = _photo_context(photo)
    context["corrections"] = selectors.photo_corrections(photo)
    return render(request, "classifier/photo_detail.html", context)


@login_required
def photo_result(request, photo_id):
    """The results panel alone: pages poll it until the photo is no longer classifying."""
    photo = selectors.photo_get_for_user(request.user, photo_id)
    return render(request, "classifier/_result.html", _photo_context(photo))


@login_required
def photo_card(request, photo_id):
    photo = selectors.photo_get_for_user(request.user, photo_id)
    return render(request, "classifier/_card.html", _photo_context(photo))


@login_required
@require_POST
def photo_retry(request, photo_id):
    photo = selectors.photo_get_for_user(request.user, photo_id)
    services.photo_retry(photo=photo)
    messages.info(request, "Classifying the photo again.")
    return redirect("classifier:photo_detail", photo_id=photo.pk)


@login_required
@require_http_methods(["GET", "POST"])
def photo_delete(request, photo_id):
    photo = selectors.photo_get_for_user(request.user, photo_id)
    if request.method == "POST":
        services.photo_delete(photo=photo)
        messages.success(request, "Photo deleted.")
        return redirect("classifier:gallery")
    return render(request, "classifier/photo_confirm_delete.html", {"photo": photo})


@login_required
def photo_file(request, photo_id, kind):
    photo = selectors.photo_get_for_user(request.user, photo_id)
    return photo_file_response(photo, kind)

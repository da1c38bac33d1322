"""Staff review: photos with per-model predictions, review filters, label corrections."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from classifier import selectors, services
from classifier.admin_filters import (
    AnswerKindFilter,
    CorrectedFilter,
    DisagreeFilter,
    LabelFlagFilter,
    ModelVersionFilter,
    SpeciesFilter,
)
from classifier.files import photo_file_response
from classifier.forms import LabelCorrectionForm
from classifier.models import LabelCorrection, ModelVersion, Photo, Prediction


class PredictionInline(admin.TabularInline):
    model = Prediction
    extra = 0
    can_delete = False
    fields = ["model_version", "top_k", "unknown", "latency_ms", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="top-5")
    def top_k(self, prediction):
        return format_html(
            "<ol style='margin:0;padding-left:1.2em'>{}</ol>",
            format_html_join("", "<li>{} — {}%</li>", ((t["label"], f"{100 * t['probability']:.1f}") for t in prediction.top)),
        )


class LabelCorrectionInline(admin.TabularInline):
    model = LabelCorrection
    extra = 0
    can_delete = False
    fields = ["created_at", "corrected_by", "old_label", "new_label", "is_confirmation"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Photo)
class PhotoAdmin(admin.ModelAdmin):
    list_display = ["thumb", "id", "owner", "created_at", "status", "answer", "predicted", "agreement", "label", "flagged"]
    list_display_links = ["thumb", "id"]
    list_filter = [AnswerKindFilter, DisagreeFilter, CorrectedFilter, LabelFlagFilter, SpeciesFilter, ModelVersionFilter, "status"]
    search_fields = ["owner__username", "sha256", "label"]
    list_select_related = ["owner"]
    actions = ["correct_label_action"]
    inlines = [PredictionInline, LabelCorrectionInline]
    readonly_fields = [
        "preview", "owner", "status", "failure_reason", "label", "label_flag", "sha256", "size_bytes", "width", "height",
        "image_format", "created_at", "queued_at", "classified_at", "correct_link",
    ]
    fields = readonly_fields
    change_form_template = "admin/classifier/photo/change_form.html"
    change_list_template = "admin/classifier/photo/change_list.html"

    def get_queryset(self, request):
        return selectors.photo_annotate(super().get_queryset(request))

    def has_add_permission(self, request):
        return False  # photos come from uploads, through services.photos_create

    def get_urls(self):
        urls = [
            path("<int:photo_id>/image/<str:kind>/", self.admin_site.admin_view(self.image_view), name="classifier_photo_image"),
            path("<int:photo_id>/correct/", self.admin_site.admin_view(self.correct_view), name="classifier_photo_correct"),
            path("review/", self.admin_site.admin_view(self.review_view), name="classifier_photo_review"),
        ]
        return urls + super().get_urls()

    # Images: staff see any photo (the owner check of the public views does not apply here).
    def image_view(self, request, photo_id, kind):
        photo = selectors.photo_get_for_staff(photo_id)
        if not self.has_view_permission(request, photo):
            raise PermissionDenied
        return photo_file_response(photo, kind)

    def _image_url(self, photo, kind):
        return reverse("admin:classifier_photo_image", args=[photo.pk, kind])

    @admin.display(description="photo")
    def thumb(self, photo):
        return format_html('<img src="{}" alt="" style="height:56px;width:56px;object-fit:cover;border-radius:4px">',
                           self._image_url(photo, "thumbnail"))

    @admin.display(description="preview")
    def preview(self, photo):
        return format_html('<a href="{}"><img src="{}" alt="" style="max-height:320px;max-width:100%"></a>',
                           self._image_url(photo, "original"), self._image_url(photo, "display"))

    @admin.display(description="predicted (default model)")
    def predicted(self, photo):
        return getattr(photo, "predicted_label", None) or "—"

    @admin.display(description="agreement")
    def agreement(self, photo):
        n = getattr(photo, "n_labels", 0)
        return "disagree" if n > 1 else ("agree" if n == 1 else "—")

    @admin.display(description="answer")
    def answer(self, photo):
        answer = selectors.photo_answer(photo)
        if answer is None:
            return "—"
        text = f"{answer.kind.replace('_', ' ')}: {answer.heading}" + (" (staff)" if answer.source == "staff" else "")
        if answer.kind == "species":
            return text
        # No confident species: it reads as a warning (the admin's own icon), never a green tick.
        icon = static("admin/img/icon-alert.svg")
        return format_html('<span class="answer-warning" data-kind="{}"><img src="{}" alt="Warning:" width="14" height="14"> {}</span>',
                           answer.kind, icon, text)

    @admin.display(description="flag", boolean=True)
    def flagged(self, photo):
        return bool(photo.label_flag) if photo.label else None

    def review_view(self, request):
        """The review queue: one photo at a time, the one a human look is worth most, large, with
        every candidate species as a button (keys 1-9), confirm/correct, skip (s)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        skipped = [int(i) for i in request.session.get("review_skipped", []) if str(i).isdigit()]
        if request.method == "POST":
            photo = selectors.photo_get_for_staff(request.POST.get("photo_id"))
            if "skip" in request.POST:
                request.session["review_skipped"] = (skipped + [photo.pk])[-500:]
                return redirect("admin:classifier_photo_review")
            try:
                # A candidate button and the "another species" list may both send a label: the
                # button pressed comes first in the form.
                label = next((v.strip() for v in request.POST.getlist("label") if v.strip()), "")
                shown = selectors.photo_annotate(Photo.objects.filter(pk=photo.pk)).values_list("effective_label", flat=True)[0]
                if label and label == shown:
                    services.label_confirm(photo=photo, confirmed_by=request.user, label=label)
                    self.message_user(request, f"Photo {photo.pk}: “{label}” confirmed.", messages.SUCCESS)
                else:
                    services.label_correct(photo=photo, new_label=label, corrected_by=request.user)
                    photo.refresh_from_db()
                    note = f" Flagged for a second look: {photo.label_flag}" if photo.label_flag else ""
                    self.message_user(request, f"Photo {photo.pk}: label set to “{label}”.{note}",
                                      messages.WARNING if note else messages.SUCCESS)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
                return redirect(f"{reverse('admin:classifier_photo_review')}?photo={photo.pk}")
            return redirect("admin:classifier_photo_review")
        if "reset" in request.GET:
            request.session["review_skipped"] = []
            skipped = []
        queue = selectors.photo_review_queue(limit=9, exclude_ids=skipped)
        wanted = request.GET.get("photo")
        if wanted and wanted.isdigit():
            item = selectors.photo_review_item(int(wanted))
        else:
            item = queue[0] if queue else None
        shown = ""
        if item is not None:
            shown = selectors.photo_annotate(Photo.objects.filter(pk=item.photo.pk)).values_list("effective_label", flat=True)[0] or ""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Review queue",
            "item": item,
            "shown_label": shown,
            "upcoming": [i for i in queue if item is None or i.photo.pk != item.photo.pk][:8],
            "remaining": selectors.photo_review_count(),
            "n_skipped": len(skipped),
            "choices": selectors.label_choices(),
        }
        return TemplateResponse(request, "admin/classifier/photo/review.html", context)

    @admin.display(description="correct the label")
    def correct_link(self, photo):
        return format_html('<a class="button" id="correct-label-link" href="{}">Correct label…</a>',
                           reverse("admin:classifier_photo_correct", args=[photo.pk]))

    def _correction_page(self, request, photos, form, action=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Correct label",
            "photos": photos,
            "form": form,
            "action": action,
            "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/classifier/photo/correct_label.html", context)

    def correct_view(self, request, photo_id):
        """Single correction: a form choosing the species from the active models' classes."""
        photo = selectors.photo_get_for_staff(photo_id)
        if not self.has_change_permission(request, photo):
            raise PermissionDenied
        form = LabelCorrectionForm(request.POST) if request.method == "POST" else LabelCorrectionForm()
        if form.is_bound and form.is_valid():
            try:
                correction = services.label_correct(photo=photo, new_label=form.cleaned_data["new_label"], corrected_by=request.user)
            except ValidationError as error:
                form.add_error("new_label", error)
            else:
                if correction is None:
                    self.message_user(request, "The label was already that; nothing changed.", messages.INFO)
                else:
                    self.message_user(request, f"Label set to “{correction.new_label}” (was “{correction.old_label or '—'}”).", messages.SUCCESS)
                return redirect("admin:classifier_photo_change", photo.pk)
        return self._correction_page(request, [photo], form)

    @admin.action(description="Correct label of selected photos…", permissions=["change"])
    def correct_label_action(self, request, queryset):
        """Bulk correction with an intermediate page; the second POST carries 'apply'."""
        photos = list(queryset)
        if "apply" in request.POST:
            form = LabelCorrectionForm(request.POST)
            if form.is_valid():
                try:
                    changed = services.labels_correct_bulk(photos=photos, new_label=form.cleaned_data["new_label"], corrected_by=request.user)
                except ValidationError as error:
                    form.add_error("new_label", error)
                else:
                    self.message_user(request, f"{changed} of {len(photos)} photos relabelled “{form.cleaned_data['new_label']}”.", messages.SUCCESS)
                    return None
        else:
            form = LabelCorrectionForm()
        return self._correction_page(request, photos, form, action="correct_label_action")


class ReadOnlyAdminMixin:
    """Append-only records: viewable in the admin, never added, changed or deleted there."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(LabelCorrection)
class LabelCorrectionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Append-only: viewable, never added, changed or deleted here."""

    list_display = ["created_at", "photo", "corrected_by", "old_label", "new_label"]
    list_filter = ["new_label"]
    readonly_fields = ["photo", "corrected_by", "old_label", "new_label", "created_at"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "number", "version", "backbone", "is_active", "is_default", "test_top1", "test_top5",
                    "field_accuracy", "n_classes", "created_by", "created_at"]
    list_filter = ["is_active", "is_default", "backbone", "name"]
    # Nothing here is edited by hand: metrics as a table, the training photos as read-only ids.
    readonly_fields = ["name", "number", "version", "backbone", "classes", "metrics_table", "unknown_threshold",
                       "artifact_path", "training_data_fingerprint", "training_photos", "created_by", "replaces",
                       "is_active", "is_default", "created_at"]
    exclude = ["metrics", "training_photo_ids"]
    actions = ["activate", "deactivate", "make_default", "roll_back", "reclassify"]
    change_form_template = "admin/classifier/modelversion/change_form.html"

    def has_add_permission(self, request):
        return False  # versions are registered from artifacts (migrate registers the shipped ones)

    def get_urls(self):
        return [
            path("<int:version_id>/confusion_matrix.svg", self.admin_site.admin_view(self.confusion_matrix_view),
                 name="classifier_modelversion_confusion_matrix"),
        ] + super().get_urls()

    def confusion_matrix_view(self, request, version_id):
        """The benchmark confusion matrix, drawn as SVG now from the counts in the version's
        evaluation/report.json (`python -m ml evaluate --report-dir` and retrains store them):
        no matplotlib, no image file to keep in step."""
        from ml.evaluate import confusion_matrix_svg

        version = ModelVersion.objects.filter(pk=version_id).first()
        if version is None or not self.has_view_permission(request, version):
            raise Http404("No such model version.")
        report = selectors.model_version_benchmark_report(version)
        if report is None or report["confusion_matrix"] is None:
            raise Http404("This version has no benchmark report with a confusion matrix.")
        matrix = report["confusion_matrix"]
        title = f"{version}: top-1 {report['top1']:.2%} on {report['n']} benchmark photos"
        response = HttpResponse(confusion_matrix_svg(matrix["counts"], matrix["classes"], title=title),
                                content_type="image/svg+xml")
        # Opened on its own, the image may run nothing (every name in it is escaped anyway).
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        version = ModelVersion.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra_context = dict(extra_context or {})
        if version is not None:
            report = selectors.model_version_benchmark_report(version)
            if report:
                report["per_class_rows"] = sorted(report["per_class"].items(), key=lambda kv: (kv[1]["recall"] or 0, kv[0]))
            extra_context.update({
                "benchmark": report,
                "field": selectors.model_version_field_accuracy(version),
            })
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description="metrics")
    def metrics_table(self, version):
        rows = [(key, f"{value:.4f}" if isinstance(value, float) else value) for key, value in sorted((version.metrics or {}).items())]
        if not rows:
            return "—"
        body = format_html_join("", "<tr><th scope=\"row\">{}</th><td>{}</td></tr>", rows)
        return format_html('<table id="metrics-table"><tbody>{}</tbody></table>', body)

    @admin.display(description="training photos")
    def training_photos(self, version):
        ids = version.training_photo_ids or []
        return f"{len(ids)} staff-labelled photos: {', '.join(map(str, ids))}" if ids else "none (trained on the collection only)"

    @admin.display(description="classes")
    def n_classes(self, version):
        return len(version.classes or [])

    @admin.display(description="benchmark top-1")
    def test_top1(self, version):
        value = (version.metrics or {}).get("test_top1")
        return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "—"

    @admin.display(description="benchmark top-5")
    def test_top5(self, version):
        value = (version.metrics or {}).get("test_top5")
        return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "—"

    @admin.display(description="field accuracy")
    def field_accuracy(self, version):
        field = selectors.model_version_field_accuracy(version)
        return f"{100 * field['accuracy']:.1f}% of {field['n']}" if field["n"] else "—"

    @admin.action(description="Activate selected model versions", permissions=["change"])
    def activate(self, request, queryset):
        for version in queryset:
            services.model_version_set_active(model_version=version, active=True)
        self.message_user(request, "Activated; workers use them from the next photo on.", messages.SUCCESS)

    @admin.action(description="Deactivate selected model versions", permissions=["change"])
    def deactivate(self, request, queryset):
        for version in queryset:
            services.model_version_set_active(model_version=version, active=False)
        self.message_user(request, "Deactivated.", messages.SUCCESS)

    @admin.action(description="Make the selected version the default", permissions=["change"])
    def make_default(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        services.model_version_make_default(model_version=queryset.get())
        self.message_user(request, "Default model changed.", messages.SUCCESS)

    @admin.action(description="Roll back: return to the version the selected one replaced", permissions=["change"])
    def roll_back(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        try:
            previous = services.model_version_roll_back(model_version=queryset.get())
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return
        self.message_user(request, f"Rolled back: {previous} is the active default again.", messages.SUCCESS)

    @admin.action(description="Re-classify every photo with the selected version (background task)", permissions=["change"])
    def reclassify(self, request, queryset):
        from retraining.services import photos_reclassify_request

        for version in queryset:
            photos_reclassify_request(model_version=version)
        self.message_user(request, f"Queued: photos without a prediction from {', '.join(map(str, queryset))} "
                                   "will be classified by a worker.", messages.SUCCESS)

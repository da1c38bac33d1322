"""Staff: retrain runs (start one, watch its progress and time left, cancel it, compare the
reports, override the rule) and the export of staff labels."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import path
from django.utils.html import format_html

from retraining import selectors, services
from retraining.models import RetrainRun


@admin.register(RetrainRun)
class RetrainRunAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "status", "progress_display", "stage", "baseline", "candidate", "decision",
                    "requested_by"]
    list_filter = ["status", "decision"]
    readonly_fields = ["status", "progress_display", "stage", "requested_by", "created_at", "started_at", "finished_at",
                       "heartbeat_at", "cancel_requested_at", "cancelled_by", "options", "baseline", "candidate",
                       "decision", "decision_reason", "decided_by", "decided_at", "error", "summary"]
    fields = readonly_fields
    change_list_template = "admin/retraining/retrainrun/change_list.html"
    change_form_template = "admin/retraining/retrainrun/change_form.html"

    def has_add_permission(self, request):
        return False  # runs start from the "Retrain now" button or `manage.py retrain`

    def has_delete_permission(self, request, obj=None):
        return False  # a run is the record of why a version was (not) promoted

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("start/", wrap(self.start_view), name="retraining_retrainrun_start"),
            path("export/", wrap(self.export_view), name="retraining_retrainrun_export"),
            path("<int:run_id>/promote/", wrap(self.promote_view), name="retraining_retrainrun_promote"),
            path("<int:run_id>/cancel/", wrap(self.cancel_view), name="retraining_retrainrun_cancel"),
            path("<int:run_id>/report/<str:which>.svg", wrap(self.report_image_view), name="retraining_retrainrun_image"),
        ] + super().get_urls()

    def _require_change(self, request):
        if not self.has_change_permission(request):
            raise PermissionDenied

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "rule": selectors.promotion_rule_text(),
                         "active_run": selectors.retrain_run_active()}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = RetrainRun.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra_context = {**(extra_context or {}), "rule": selectors.promotion_rule_text(), "run": run}
        if run is not None:
            extra_context.update({
                "comparison": _comparison(run), "timing": _timing_text(selectors.retrain_run_timing(run)),
                "has_matrix": {which: bool(((report or {}).get("benchmark") or {}).get("confusion_matrix"))
                               for which, report in (("candidate", run.candidate_report),
                                                     ("baseline", run.baseline_report))},
            })
        return super().change_view(request, object_id, form_url, extra_context)

    def start_view(self, request):
        """POST: queue a retrain run for a worker (the "Retrain now" button)."""
        self._require_change(request)
        if request.method != "POST":
            return redirect("admin:retraining_retrainrun_changelist")
        try:
            run = services.retrain_run_request(requested_by=request.user,
                                               include_flagged=bool(request.POST.get("include_flagged")),
                                               promote=not request.POST.get("evaluate_only"))
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return redirect("admin:retraining_retrainrun_changelist")
        self.message_user(request, f"{run} queued; this page shows its progress.", messages.SUCCESS)
        return redirect("admin:retraining_retrainrun_change", run.pk)

    def promote_view(self, request, run_id):
        """POST: promote the run's version although the rule did not (a recorded override)."""
        self._require_change(request)
        run = get_object_or_404(RetrainRun, pk=run_id)
        if request.method == "POST":
            try:
                run = services.retrain_run_promote(run=run, promoted_by=request.user)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
            else:
                self.message_user(request, f"{run.candidate} is now the active default ({run.get_decision_display()}).",
                                  messages.SUCCESS)
        return redirect("admin:retraining_retrainrun_change", run.pk)

    def cancel_view(self, request, run_id):
        """POST: stop the run (a queued one never starts; a running one stops within seconds)."""
        self._require_change(request)
        run = get_object_or_404(RetrainRun, pk=run_id)
        if request.method == "POST":
            try:
                run = services.retrain_run_cancel(run=run, cancelled_by=request.user)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
            else:
                self.message_user(request, f"{run} cancelled." if run.status == RetrainRun.Status.CANCELLED else
                                  f"{run} is stopping; this page shows when it has.", messages.SUCCESS)
        return redirect("admin:retraining_retrainrun_change", run.pk)

    def report_image_view(self, request, run_id, which):
        # Staff without the view permission on retrain runs see no report either.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        run = get_object_or_404(RetrainRun, pk=run_id)
        response = HttpResponse(selectors.retrain_run_confusion_matrix_svg(run, which), content_type="image/svg+xml")
        # Opened on its own, the image may run nothing (every name in it is escaped anyway).
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return response

    def export_view(self, request):
        """Downloads the corrected and confirmed photos as an ImageFolder zip with manifest.csv."""
        self._require_change(request)
        archive, count = services.labels_export_zip(include_not_butterfly=bool(request.GET.get("include_not_butterfly")),
                                                    include_flagged=bool(request.GET.get("include_flagged")))
        return FileResponse(archive, as_attachment=True, filename="labels.zip", content_type="application/zip")

    @admin.display(description="progress")
    def progress_display(self, run):
        return format_html('<progress value="{}" max="100" data-run-status="{}"></progress> {}%',
                           round(100 * run.progress), run.status, round(100 * run.progress))


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _timing_text(timing: selectors.RunTiming) -> dict:
    """The run's times as the page words them ("estimating…" until progress says enough)."""
    return {
        "elapsed": _duration(timing.elapsed_s) if timing.elapsed_s is not None else None,
        "remaining": _duration(timing.remaining_s) if timing.remaining_s is not None else "estimating…",
        "waiting": _duration(timing.waiting_s) if timing.waiting_s is not None else None,
        "long_wait": timing.waiting_s is not None and timing.waiting_s > 60,
        "heartbeat": _duration(timing.heartbeat_age_s) if timing.heartbeat_age_s is not None else None,
    }


def _comparison(run: RetrainRun) -> list[dict]:
    """Rows of the side-by-side table: the new version and the active one on the same photos."""
    rows = []
    for part, title in (("benchmark", "benchmark test set"), ("holdout", "held-out staff-labelled photos"),
                        ("combined", "both together")):
        new, old = run.candidate_report.get(part), (run.baseline_report or {}).get(part)
        if not new:
            continue
        rows.append({"part": part, "title": title, "n": new["n"], "new_top1": new["top1"], "new_top5": new["top5"],
                     "old_top1": old["top1"] if old else None, "old_top5": old["top5"] if old else None})
    return rows

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from classifier.admin import ReadOnlyAdminMixin
from ml import species
from suggestions.models import UserSuggestion
from suggestions.selectors import suggestion_label_name


class DecidedFilter(admin.SimpleListFilter):
    title = "staff decision"
    parameter_name = "decided"

    def lookups(self, request, model_admin):
        return [("no", "waiting for staff"), ("yes", "photo labelled by staff")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(photo__label="")
        if self.value() == "yes":
            return queryset.exclude(photo__label="")
        return queryset


class SuggestedLabelFilter(admin.SimpleListFilter):
    title = "suggested label"
    parameter_name = "label"

    def lookups(self, request, model_admin):
        used = set(UserSuggestion.objects.values_list("label", flat=True).distinct())
        return [(label, suggestion_label_name(label)) for label in sorted(used, key=suggestion_label_name)]

    def queryset(self, request, queryset):
        return queryset.filter(label=self.value()) if self.value() else queryset


@admin.register(UserSuggestion)
class UserSuggestionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: suggestions are append-only; staff answer them by labelling the photo."""

    list_display = ["created_at", "photo_link", "user", "suggested", "models_said", "staff_label"]
    list_filter = [DecidedFilter, SuggestedLabelFilter, "created_at"]
    search_fields = ["user__username", "label", "photo__id"]
    date_hierarchy = "created_at"
    list_select_related = ["photo", "user"]

    @admin.display(description="photo", ordering="photo_id")
    def photo_link(self, suggestion):
        url = reverse("admin:classifier_photo_correct", args=[suggestion.photo_id])
        return format_html('<a href="{}">Photo {} (label it)</a>', url, suggestion.photo_id)

    @admin.display(description="suggested", ordering="label")
    def suggested(self, suggestion):
        return suggestion_label_name(suggestion.label)

    @admin.display(description="models said")
    def models_said(self, suggestion):
        photo = suggestion.photo  # the models' answer, kept beside any staff label
        if photo.identification_label:
            return species.name(photo.identification_label)
        return photo.identification_kind.replace("_", " ") or "—"

    @admin.display(description="staff label", ordering="photo__label")
    def staff_label(self, suggestion):
        return species.name(suggestion.photo.label) if suggestion.photo.label else "—"



"""The photo list's filters in the admin (each calls a selector)."""

from django.contrib import admin

from classifier import selectors
from classifier.models import ModelVersion
from ml.identify import KINDS as ANSWER_KINDS


class DisagreeFilter(admin.SimpleListFilter):
    title = "models disagree"
    parameter_name = "disagree"

    def lookups(self, request, model_admin):
        return [("yes", "Models disagree")]

    def queryset(self, request, queryset):
        return selectors.photo_filter_disagreeing(queryset) if self.value() == "yes" else queryset


class AnswerKindFilter(admin.SimpleListFilter):
    title = "answer"
    parameter_name = "answer"

    def lookups(self, request, model_admin):
        return [(kind, kind.replace("_", " ")) for kind in ANSWER_KINDS]

    def queryset(self, request, queryset):
        return selectors.photo_filter_answer_kind(queryset, self.value()) if self.value() in ANSWER_KINDS else queryset


class CorrectedFilter(admin.SimpleListFilter):
    title = "correction"
    parameter_name = "corrected"

    def lookups(self, request, model_admin):
        return [("yes", "Corrected"), ("no", "Not yet corrected")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return selectors.photo_filter_corrected(queryset, self.value() == "yes")
        return queryset


class SpeciesFilter(admin.SimpleListFilter):
    title = "species"
    parameter_name = "species"

    def lookups(self, request, model_admin):
        return [(label, label) for label in selectors.label_choices()]

    def queryset(self, request, queryset):
        return selectors.photo_filter_species(queryset, self.value()) if self.value() else queryset


class ModelVersionFilter(admin.SimpleListFilter):
    title = "model version"
    parameter_name = "model_version"

    def lookups(self, request, model_admin):
        return [(str(v.pk), str(v)) for v in ModelVersion.objects.all()]

    def queryset(self, request, queryset):
        if self.value() and self.value().isdigit():
            return selectors.photo_filter_model_version(queryset, int(self.value()))
        return queryset


class LabelFlagFilter(admin.SimpleListFilter):
    title = "label quality"
    parameter_name = "label_flag"

    def lookups(self, request, model_admin):
        return [("yes", "Flagged for a second look")]

    def queryset(self, request, queryset):
        return queryset.exclude(label_flag="") if self.value() == "yes" else queryset

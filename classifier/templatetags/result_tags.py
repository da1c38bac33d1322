"""How a result reads: {{ answer|answer_words }}, {{ model_version|version_label }}, {{ probability|percent }}."""

from django import template
from django.utils import formats
from django.utils.dateparse import parse_datetime

register = template.Library()


@register.filter
def answer_words(answer):
    """The answer as a person says it (the gallery card's line and the photo's alt text)."""
    if answer is None:
        return "No answer yet"
    if answer.kind == "species":
        return answer.name or answer.label
    if answer.kind == "uncertain":
        return " or ".join(c["name"] for c in answer.candidates) + "?"
    if answer.kind == "unknown_species":
        return "A butterfly or moth we don't know yet"
    return "Not a butterfly"


@register.filter
def version_label(model_version):
    """ "v3 · trained 28 Nov 2026": the version number, and the day its artifact was trained (the
    version string is the artifact's creation timestamp) or else registered."""
    trained = parse_datetime(model_version.version or "") or model_version.created_at
    return f"v{model_version.number} · trained {formats.date_format(trained, 'j M Y')}"


@register.filter
def percent(probability):
    """0.8734 -> "87.3"; for the width of a bar and the figure beside it."""
    try:
        return f"{100 * float(probability):.1f}"
    except (TypeError, ValueError):
        return "0.0"

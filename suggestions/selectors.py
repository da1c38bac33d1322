"""Reads: the labels a person may suggest, and what became of their suggestions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from ml import species
from suggestions.models import ANOTHER_SPECIES, UserSuggestion


@lru_cache(maxsize=1)
def suggestion_labels() -> frozenset[str]:
    return frozenset(species.keys()) | {species.NOT_A_BUTTERFLY, ANOTHER_SPECIES}


def suggestion_choices() -> list[tuple[str, str]]:
    """(label, what a person reads) for the "Not right?" form: the catalogue by name, then the two others."""
    return [(s.key, f"{s.name} ({s.scientific_name})") for s in species.all()] + [
        (species.NOT_A_BUTTERFLY, "Not a butterfly or moth"),
        (ANOTHER_SPECIES, "A butterfly or moth not in this list"),
    ]


def suggestion_label_name(label: str) -> str:
    if label == ANOTHER_SPECIES:
        return "Another species"
    return species.name(label)


@dataclass
class SuggestionStatus:
    label: str
    name: str
    created_at: datetime
    # The staff label given after this suggestion ("" while staff have not decided).
    decision: str = ""
    decision_name: str = ""
    decided_at: datetime | None = None


def suggestion_history_for_photo(photo) -> list[SuggestionStatus]:
    """The photo's suggestions, newest first, each with the staff decision made after it, if any."""
    corrections = list(photo.corrections.order_by("created_at", "id").values("new_label", "created_at"))
    rows = []
    for suggestion in UserSuggestion.objects.filter(photo=photo).order_by("-created_at", "-id"):
        row = SuggestionStatus(suggestion.label, suggestion_label_name(suggestion.label), suggestion.created_at)
        later = [c for c in corrections if c["created_at"] >= suggestion.created_at]
        if later:
            row.decision, row.decided_at = later[-1]["new_label"], later[-1]["created_at"]
            row.decision_name = species.name(row.decision)
        rows.append(row)
    return rows

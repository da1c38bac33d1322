"""Reads for the species pages: the catalogue (ml.species) and the signed-in user's photos of a species."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from classifier import selectors
from ml import species as catalogue


def species_get_by_slug(slug: str) -> catalogue.Species:
    try:
        return catalogue.by_slug(slug)
    except KeyError:
        raise Http404("No such species.") from None


def species_photos_for_user(user, species: catalogue.Species, *, limit: int = 24) -> QuerySet:
    """The user's own finished photos whose answer (a staff label first, else the models') is this
    species, newest first: the gallery's species filter, so both always agree."""
    return selectors.photo_list_for_user(user, species=species.key)[:limit]


def species_featured(n: int = 6) -> list[catalogue.Species]:
    """A few well-known species for the landing page, in a fixed order (the first n that exist)."""
    wanted = ["monarch", "peacock", "red admiral", "orange tip", "morning cloak", "paper kite", "painted lady"]
    keys = set(catalogue.keys())
    return [catalogue.get(key) for key in wanted if key in keys][:n]

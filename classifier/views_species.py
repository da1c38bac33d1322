"""The species pages: the catalogue for everyone, and on a species' page the signed-in user's own photos of it."""

from django.shortcuts import render

from classifier import selectors_species
from ml import species as catalogue


def species_list(request):
    return render(request, "species/species_list.html", {"species_list": catalogue.all()})


def species_detail(request, slug):
    species = selectors_species.species_get_by_slug(slug)
    photos = selectors_species.species_photos_for_user(request.user, species) if request.user.is_authenticated else []
    return render(request, "species/species_detail.html", {"species": species, "photos": photos})

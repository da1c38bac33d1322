"""Catalogue lookups for templates: {{ key|species_name }}, {% species_for key as sp %}."""

from django import template

from ml import species as catalogue

register = template.Library()


@register.filter
def species_name(key):
    return catalogue.name(key) if key else ""


@register.simple_tag
def species_for(key):
    """The catalogue entry for a class key, or None for a label the catalogue does not list."""
    try:
        return catalogue.get(key)
    except KeyError:
        return None

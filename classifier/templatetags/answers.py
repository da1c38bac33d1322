"""{{ photo|answer }}: the photo's one answer (classifier.selectors.photo_answer) in templates."""

from django import template

from classifier import selectors

register = template.Library()


@register.filter
def answer(photo):
    return selectors.photo_answer(photo)

"""{% not_right photo %}: the "Not right?" form under a result, with what the owner said before and
what staff decided."""

from django import template

from suggestions import selectors

register = template.Library()


@register.inclusion_tag("suggestions/_not_right.html", takes_context=True)
def not_right(context, photo):
    return {
        "photo": photo,
        "choices": selectors.suggestion_choices(),
        "history": selectors.suggestion_history_for_photo(photo),
        "csrf_token": context.get("csrf_token"),
    }

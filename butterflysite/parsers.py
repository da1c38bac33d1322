"""The API's JSON parser: JSON whose keys or strings carry a NUL or other control character is
refused with a 400 and a readable message (PostgreSQL cannot store NUL; a query with one was a 500)."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from butterflysite.middleware import CONTROL_CHARACTER_MESSAGE, CONTROL_CHARACTERS


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class PlainTextJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        if any(CONTROL_CHARACTERS.search(text) for text in _strings(data)):
            raise ParseError(CONTROL_CHARACTER_MESSAGE.format(where="a JSON field"))
        return data

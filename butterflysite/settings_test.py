"""Settings for the test suite (pyproject.toml's DJANGO_SETTINGS_MODULE): the development or
production settings of butterflysite/settings.py, plus where the test database lives.

Live-worker tests start their Celery worker with these settings too (tests/conftest.py).
"""

import os

from butterflysite.settings import *  # noqa: F403
from butterflysite.settings import DATABASES, VAR_DIR, env_str

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so a Celery worker subprocess can open the same test database; one per
    # test process, so concurrent test runs never share (or delete) each other's.
    DATABASES["default"]["TEST"] = {
        "NAME": env_str("DJANGO_TEST_SQLITE", str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3"))
    }
if env_str("DJANGO_TEST_DATABASE_NAME"):
    # Lets two test runs share one PostgreSQL server without fighting over "test_<name>".
    DATABASES["default"].setdefault("TEST", {})["NAME"] = env_str("DJANGO_TEST_DATABASE_NAME")

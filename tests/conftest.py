"""Fixtures shared by every layer of the test suite."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("BUTTERFLYSITE_SHARED_DIR", ROOT.parent / "shared"))
DATA_DIR = SHARED_DIR / "data" / "butterflies50"
WEIGHTS_DIR = SHARED_DIR / "weights"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the team's ../shared folder, absent from a fresh checkout)")
    return path


@pytest.fixture(scope="session")
def butterflies_dir() -> Path:
    """../shared/data/butterflies50: real photos, train/ and test/ in ImageFolder layout."""
    return _require(DATA_DIR)


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """../shared/weights: real pretrained backbone weights in Keras form."""
    return _require(WEIGHTS_DIR)


def _database_url(connection) -> str:
    """The URL of the test database this process uses, for a worker subprocess to open."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        name = str(db["NAME"])
        if not name or name == ":memory:" or "mode=memory" in name:
            pytest.skip("a worker process cannot share an in-memory SQLite test database")
        return f"sqlite:///{Path(name).resolve()}"
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        return f"postgres://{auth}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
    pytest.skip(f"no live-worker support for {connection.vendor}")


def _celery_worker_process(settings, overrides: dict, queue: str, *extra_args: str):
    """A real `celery -A butterflysite worker` on `queue` with this test's database (`overrides`:
    the environment variables that differ), its log lines collected in `process.log`; stopped (and its queue
    emptied on Redis) when the generator closes."""
    import subprocess
    import sys
    import threading

    from django.db import connection

    env = {
        **os.environ,
        "DATABASE_URL": _database_url(connection),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "DJANGO_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        # This run's settings (pytest-django sets the variable from pyproject.toml: settings_test).
        "DJANGO_SETTINGS_MODULE": os.environ["DJANGO_SETTINGS_MODULE"],
        "ML_ARTIFACTS_DIR": str(settings.ML_ARTIFACTS_DIR),
        "PYTHONUNBUFFERED": "1",
        **overrides,
    }
    celery = Path(sys.executable).parent / "celery"
    command = [str(celery) if celery.exists() else "celery", "-A", "butterflysite", "worker",
               "-Q", queue, "-n", f"{queue}@%h", "--concurrency", "1", *extra_args, "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    process.log = []
    threading.Thread(target=lambda: process.log.extend(iter(process.stdout.readline, "")), daemon=True).start()
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if settings.CELERY_BROKER_URL.startswith("redis"):
            import redis

            redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(queue)


@pytest.fixture
def live_worker(transactional_db, settings, tmp_path):
    """A real `celery -A butterflysite worker` process on this test's database and media.

    It uses the configured broker (Redis when REDIS_URL is set, else the embedded filesystem
    broker) on a queue of its own, so no other worker takes this test's tasks.
    """
    import uuid

    queue = f"test-{uuid.uuid4().hex[:12]}"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.CLASSIFIER_TASK_QUEUE = queue
    yield from _celery_worker_process(settings, {"CLASSIFIER_TASK_QUEUE": queue}, queue)


@pytest.fixture(autouse=True)
def _rate_limit_counters_of_this_test(settings):
    """Each test counts rate limits under its own cache prefix: test runs sharing one Redis (CI,
    concurrent runs) never push each other over a sign-in or upload limit."""
    import uuid

    settings.RATELIMIT_CACHE_PREFIX = f"rl-test-{uuid.uuid4().hex[:12]}:"

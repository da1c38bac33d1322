"""Nothing left behind by a killed upload: files are written before their rows are committed, and
the orphan sweep (services.media_sweep_orphans; `manage.py sweep_orphan_files`; Celery beat)
deletes stored photo files no row refers to once they are older than the grace period.

The process test SIGKILLs the gunicorn worker (the Procfile's web command) in the middle of a
20-photo form upload, after a photo's files were stored and before its row was committed."""

from __future__ import annotations

import io
import os
import re
import signal
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command
from PIL import Image

from classifier import services
from classifier.models import Photo
from scripts import harness
from tests.classifier.factories import PhotoFactory, UserFactory
from tests.deploy.conftest import bucket, bucket_env, s3_server  # noqa: F401 (fixtures: a bucket on moto_server)

PHOTO_FOLDERS = ("originals", "display", "thumbnails")


@pytest.fixture
def media_root(settings, tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


def _stored(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _age(root: Path, name: str, seconds: float):
    then = time.time() - seconds
    os.utime(root / name, (then, then))


@pytest.mark.django_db
def test_sweep_deletes_only_old_files_no_row_refers_to(media_root, settings):
    settings.MEDIA_ORPHAN_GRACE_SECONDS = 3600
    photo = PhotoFactory()
    kept = [photo.original.name, photo.display.name, photo.thumbnail.name]
    for name in kept:
        _age(media_root, name, 7200)  # old, but a row refers to them
    for folder in PHOTO_FOLDERS:
        (media_root / folder / "old-orphan.jpg").write_bytes(b"x")
        _age(media_root, f"{folder}/old-orphan.jpg", 7200)
        (media_root / folder / "fresh-orphan.jpg").write_bytes(b"x")  # an upload still in progress
    (media_root / "artifacts").mkdir()
    (media_root / "artifacts" / "model.keras").write_bytes(b"x")  # not a photo folder: never swept
    _age(media_root, "artifacts/model.keras", 7200)

    deleted = services.media_sweep_orphans()

    assert sorted(deleted) == sorted(f"{folder}/old-orphan.jpg" for folder in PHOTO_FOLDERS)
    assert set(kept) <= set(_stored(media_root)) and "artifacts/model.keras" in _stored(media_root)
    assert all(f"{folder}/fresh-orphan.jpg" in _stored(media_root) for folder in PHOTO_FOLDERS)
    assert services.media_sweep_orphans() == []  # idempotent
    out = io.StringIO()
    call_command("sweep_orphan_files", "--older-than", "0", stdout=out)
    assert "deleted 3 orphan file(s)" in out.getvalue()
    assert Photo.objects.count() == 1 and set(_stored(media_root)) == set(kept) | {"artifacts/model.keras"}


def _noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _multipart(token: str, files: list[bytes]) -> tuple[bytes, str]:
    boundary = "orphantest"
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{token}\r\n'.encode()
    for index, content in enumerate(files):
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="p{index}.jpg"\r\n'
                 "Content-Type: image/jpeg\r\n\r\n").encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.reliability
@pytest.mark.slow
def test_worker_killed_mid_upload_leaves_orphans_that_the_sweep_removes(transactional_db, client, media_root, settings,
                                                                         tmp_path):
    from django.db import connection

    from tests.conftest import _database_url

    settings.RATELIMIT_ENABLE = False
    user = UserFactory()
    client.force_login(user)  # the session row is committed: the web process reads it
    session = client.cookies["sessionid"].value
    port = harness.free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "butterflysite.settings",
        "DJANGO_ENV": "development",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": _database_url(connection),
        "DJANGO_MEDIA_ROOT": str(media_root),
        "BUTTERFLYSITE_VAR_DIR": str(tmp_path / "var"),
        "RATELIMIT_ENABLE": "false",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
        "PATH": f"{harness.VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "DJANGO_TEST_DATABASE_NAME"):
        env.pop(name, None)
    log = tmp_path / "web.log"
    web = harness.start("web", env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        def page():
            request = urllib.request.Request(base + "/upload/", headers={"Cookie": f"sessionid={session}"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.read().decode(), response.headers.get_all("Set-Cookie")
            except OSError:
                if web.poll() is not None:
                    raise AssertionError(log.read_text()[-3000:]) from None
                return None

        html, cookies = harness.wait_until(page, 60, what="gunicorn")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
        csrf_cookie = next(c.split(";", 1)[0] for c in cookies if c.startswith("csrftoken="))
        body, content_type = _multipart(token, [_noise_jpeg(seed) for seed in range(20)])
        request = urllib.request.Request(base + "/upload/", data=body, method="POST", headers={
            "Cookie": f"sessionid={session}; {csrf_cookie}", "Content-Type": content_type})
        import threading

        threading.Thread(target=lambda: _ignore_errors(urllib.request.urlopen, request, timeout=120), daemon=True).start()
        # The upload page stores each photo's files, then commits its row: freeze the worker at a
        # moment when some stored files have no committed row yet, then kill it there.
        harness.wait_until(lambda: len(_stored(media_root)) >= 1, 60, interval=0.05, what="a stored file")
        workers = [pid for pid in harness.descendants(web.pid) if pid != web.pid]
        deadline = time.monotonic() + 60
        while True:
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            orphans = sorted(set(_stored(media_root)) - _referenced())
            if orphans or time.monotonic() > deadline:
                break
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
            time.sleep(0.02)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        referenced = _referenced()
        assert orphans and set(_stored(media_root)) - referenced == set(orphans), (orphans, _stored(media_root))

        settings.MEDIA_ORPHAN_GRACE_SECONDS = 3600
        assert services.media_sweep_orphans() == []  # still within the grace period
        deleted = services.media_sweep_orphans(older_than_seconds=0)
        assert sorted(deleted) == orphans and set(_stored(media_root)) == referenced
    finally:
        harness.stop(web, signal.SIGKILL)


def _referenced() -> set[str]:
    """The stored names that committed photo rows refer to."""
    return {name for photo in Photo.objects.all() for name in (photo.original.name, photo.display.name, photo.thumbnail.name)}


def _ignore_errors(function, *args, **kwargs):
    try:
        function(*args, **kwargs)
    except OSError:
        pass  # the worker was killed: no answer


def test_beat_schedules_the_orphan_sweep_and_the_task_runs_it(settings, media_root, db):
    from butterflysite.celery import app
    from classifier.tasks import sweep_orphan_files

    entry = app.conf.beat_schedule["sweep orphan files"]
    assert entry["task"] == "classifier.tasks.sweep_orphan_files"
    assert entry["schedule"] == float(settings.MEDIA_ORPHAN_SWEEP_INTERVAL_SECONDS)
    (media_root / "thumbnails").mkdir()
    (media_root / "thumbnails" / "orphan.jpg").write_bytes(b"x")
    _age(media_root, "thumbnails/orphan.jpg", settings.MEDIA_ORPHAN_GRACE_SECONDS + 60)
    assert sweep_orphan_files.apply().get() == 1 and _stored(media_root) == []


@pytest.mark.deploy
@pytest.mark.django_db
def test_sweep_on_the_bucket_deletes_only_objects_no_row_refers_to(bucket, settings):  # noqa: F811
    # The production storage (django-storages S3) against moto_server over HTTP: listing the
    # photo folders and reading each candidate's LastModified work there too.
    env = bucket_env(bucket)
    settings.AWS_STORAGE_BUCKET_NAME = env["AWS_STORAGE_BUCKET_NAME"]
    settings.AWS_S3_ENDPOINT_URL = env["AWS_S3_ENDPOINT_URL"]
    settings.AWS_S3_REGION_NAME = env["AWS_S3_REGION_NAME"]
    settings.AWS_S3_ACCESS_KEY_ID = env["AWS_ACCESS_KEY_ID"]
    settings.AWS_S3_SECRET_ACCESS_KEY = env["AWS_SECRET_ACCESS_KEY"]
    settings.AWS_DEFAULT_ACL = None
    settings.AWS_S3_FILE_OVERWRITE = False
    settings.STORAGES = {**settings.STORAGES, "default": {"BACKEND": "storages.backends.s3.S3Storage"}}
    settings.RATELIMIT_ENABLE = False
    photo = services.photos_create(owner=UserFactory(), uploads=[_upload(_noise_jpeg(1))])[0]
    client, name = bucket["client"], bucket["name"]
    for key in ("originals/orphan.jpg", "display/orphan.jpg", "thumbnails/orphan.jpg", "artifacts/m/model.keras"):
        client.put_object(Bucket=name, Key=key, Body=b"x")

    assert services.media_sweep_orphans() == []  # all younger than the grace period
    deleted = services.media_sweep_orphans(older_than_seconds=0)

    keys = {o["Key"] for o in client.list_objects_v2(Bucket=name).get("Contents", [])}
    assert sorted(deleted) == ["display/orphan.jpg", "originals/orphan.jpg", "thumbnails/orphan.jpg"]
    assert keys == {photo.original.name, photo.display.name, photo.thumbnail.name, "artifacts/m/model.keras"}


def _upload(content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("p.jpg", content, content_type="image/jpeg")

"""Per-user storage quota (USER_STORAGE_QUOTA_BYTES), counted from the stored originals' sizes and
checked before anything is stored: a clear message in the page (400) and the API (413), nothing
written; under the quota uploads go through; other users' photos do not count."""

from __future__ import annotations

import pytest
from django.urls import reverse

from classifier import services
from classifier.models import Photo
from tests.classifier.conftest import media_files
from tests.classifier.factories import PhotoFactory, UserFactory
from tests.classifier.images import image_bytes, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def quota(settings):
    settings.RATELIMIT_ENABLE = False
    settings.USER_STORAGE_QUOTA_BYTES = 50_000
    return settings.USER_STORAGE_QUOTA_BYTES


def _photo(color) -> bytes:
    # Noise-free but distinct JPEGs of a few KB.
    return image_bytes(size=(400, 300), color=color, quality=95)


def test_default_quota_is_one_gigabyte():
    from importlib import reload

    import butterflysite.settings as module

    assert reload(module).USER_STORAGE_QUOTA_BYTES == 1024 ** 3


def test_form_upload_over_the_quota_is_refused_with_a_message_and_nothing_stored(client, quota, media_root):
    owner = UserFactory()
    PhotoFactory(owner=owner, size_bytes=quota - 1000)
    PhotoFactory(size_bytes=quota)  # someone else's: does not count
    files_before = media_files(media_root)
    client.force_login(owner)
    response = client.post(reverse("classifier:upload"), {"images": [upload(content=_photo((10, 20, 30)))]})
    html = response.content.decode()
    assert response.status_code == 400
    assert "more than your storage quota of 48 KB: you store 47 KB, these photos add" in html
    assert "Delete some photos or upload fewer." in html
    assert Photo.objects.filter(owner=owner).count() == 1 and media_files(media_root) == files_before


def test_api_upload_over_the_quota_is_413_with_detail(api_client, quota, media_root):
    owner = UserFactory()
    PhotoFactory(owner=owner, size_bytes=quota)
    files_before = media_files(media_root)
    api_client.force_authenticate(owner)
    response = api_client.post("/api/photos/", {"image": upload(content=_photo((40, 50, 60)))}, format="multipart")
    assert response.status_code == 413 and "your storage quota" in response.json()["detail"]
    assert Photo.objects.filter(owner=owner).count() == 1 and media_files(media_root) == files_before


def test_uploads_fill_the_quota_then_stop(quota, media_root):
    owner = UserFactory()
    content = _photo((70, 80, 90))
    fits = quota // len(content)
    for index in range(fits):
        services.photos_create(owner=owner, uploads=[upload(f"p{index}.jpg", content=content)])
    assert sum(Photo.objects.filter(owner=owner).values_list("size_bytes", flat=True)) == fits * len(content)
    with pytest.raises(services.QuotaExceeded):
        services.photos_create(owner=owner, uploads=[upload("one-more.jpg", content=content)])
    assert Photo.objects.filter(owner=owner).count() == fits
    assert len(media_files(media_root)) == 3 * fits  # original, display copy, thumbnail each


def test_a_request_that_would_cross_the_quota_stores_none_of_its_photos(quota, media_root):
    owner = UserFactory()
    content = _photo((100, 110, 120))
    many = [upload(f"p{index}.jpg", content=content) for index in range(quota // len(content) + 1)]
    with pytest.raises(services.QuotaExceeded):
        services.photos_create(owner=owner, uploads=many)
    assert Photo.objects.count() == 0 and media_files(media_root) == []


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_uploads_cannot_both_use_the_last_room(settings, media_root):
    # Both pass the first check before either commits; the re-check under the lock on the
    # owner's row lets exactly one through, and the other's files are deleted.
    import threading

    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (SELECT ... FOR UPDATE; SQLite serialises writers differently)")
    settings.RATELIMIT_ENABLE = False
    owner = UserFactory()
    contents = [_photo((130 + index, 20, 30)) for index in range(2)]
    settings.USER_STORAGE_QUOTA_BYTES = max(len(c) for c in contents) * 3 // 2  # room for one of them
    barrier, outcomes = threading.Barrier(2), []

    def upload_one(content):
        from django.db import connection as thread_connection

        try:
            barrier.wait(10)
            services.photos_create(owner=owner, uploads=[upload(content=content)])
            outcomes.append("stored")
        except services.QuotaExceeded:
            outcomes.append("refused")
        finally:
            thread_connection.close()

    threads = [threading.Thread(target=upload_one, args=(content,)) for content in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(outcomes) == ["refused", "stored"]
    assert Photo.objects.filter(owner=owner).count() == 1 and len(media_files(media_root)) == 3

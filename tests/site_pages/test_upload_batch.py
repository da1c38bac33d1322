"""A batch keeps its good files and names each refused one and why (the server's check, behind the browser's)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier.models import Photo
from tests.classifier.factories import UserFactory
from tests.classifier.images import upload

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_good_files_are_kept_and_each_refused_file_is_named(client, django_capture_on_commit_callbacks):
    user = UserFactory()
    client.force_login(user)
    files = [upload("a.jpg", color=(1, 2, 3)), SimpleUploadedFile("broken.jpg", b"\xff\xd8 not really", "image/jpeg"),
             upload("b.png", fmt="PNG", content_type="image/png", color=(9, 8, 7)), SimpleUploadedFile("empty.jpg", b"", "image/jpeg")]
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(reverse("classifier:upload"), {"images": files}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("classifier:gallery")
    assert Photo.objects.filter(owner=user).count() == 2
    page = response.content.decode()
    assert "Not uploaded:" in page and "&quot;broken.jpg&quot; is not a JPEG, PNG or WebP image" in page
    assert "&quot;empty.jpg&quot; is empty" in page


def test_a_batch_of_only_bad_files_stays_on_the_form_with_every_reason(client):
    user = UserFactory()
    client.force_login(user)
    files = [SimpleUploadedFile("x.jpg", b"nope", "image/jpeg"), SimpleUploadedFile("y.gif", b"GIF89a", "image/gif")]
    response = client.post(reverse("classifier:upload"), {"images": files})
    assert response.status_code == 400 and not Photo.objects.exists()
    page = response.content.decode()
    assert "&quot;x.jpg&quot;" in page and "&quot;y.gif&quot;" in page

import pytest
from rest_framework.test import APIClient

from tests.classifier.factories import PhotoFactory, UserFactory


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def owner(db):
    return UserFactory()


@pytest.fixture
def photo(owner):
    return PhotoFactory(owner=owner)


@pytest.fixture
def api_for():
    def client(user):
        api = APIClient()
        api.force_authenticate(user)
        return api

    return client

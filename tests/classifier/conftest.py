import pytest
from rest_framework.test import APIClient

from classifier.models import ModelVersion
from tests.classifier.factories import ModelVersionFactory, UserFactory


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Every test writes its uploads under its own temporary MEDIA_ROOT."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = root
    return root


def media_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def shipped_model(db):
    """The shipped default model, registered by the post_migrate handler of the test database."""
    return ModelVersion.objects.get(is_default=True)


@pytest.fixture
def second_model(db):
    return ModelVersionFactory(name="second_model", classes=["monarch", "viceroy", "peacock"])


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def api_client():
    return APIClient()

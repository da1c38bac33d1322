# The classifier tests' fixtures (a temporary MEDIA_ROOT for every test, users, clients), shared here.
from tests.classifier.conftest import api_client, client_for, media_root, other_user, user  # noqa: F401

# The classifier tests' fixtures (a temporary MEDIA_ROOT for every test, users, clients), shared here.
from tests.classifier.conftest import api_client, client_for, media_root, other_user, user  # noqa: F401

# The production stack's fixtures (moto_server bucket, a throwaway PostgreSQL database, Redis).
from tests.deploy.conftest import bucket, postgres_database, redis_url, s3_server  # noqa: E402, F401, I001

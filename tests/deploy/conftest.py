"""Production-like fixtures: a real S3-compatible server (moto in server mode, its own process on
a free loopback port), a private bucket, a throwaway PostgreSQL database, and the environment a
Heroku dyno would have. Processes under test are started as subprocesses with that environment,
so they read butterflysite/settings.py exactly as a dyno does."""

from __future__ import annotations

import os
import secrets
import subprocess
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import pytest

from scripts import harness
from scripts.harness import ROOT, VENV_BIN, free_port, manage, stop, wait_until

__all__ = ["ROOT", "free_port", "manage", "production_env", "stop", "wait_until"]

HOST = "butterflysite-test.herokuapp.com"


def production_env(**extra) -> dict:
    """What a dyno's environment holds (config vars), minus anything from this shell."""
    return harness.production_env(host=HOST, **extra)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto_server on a free 127.0.0.1 port: {"endpoint", "access_key", "secret_key", "region"}."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    endpoint = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    wait_until(up, 30, what="moto_server")
    yield {"endpoint": endpoint, "access_key": "deploytest", "secret_key": secrets.token_hex(16), "region": "us-east-1"}
    stop(process)


@pytest.fixture
def bucket(s3_server):
    """A fresh private bucket (no public ACL, public access blocked) on the S3 server."""
    import boto3

    client = boto3.client(
        "s3", endpoint_url=s3_server["endpoint"], aws_access_key_id=s3_server["access_key"],
        aws_secret_access_key=s3_server["secret_key"], region_name=s3_server["region"],
    )
    name = f"butterflysite-test-{secrets.token_hex(4)}"
    client.create_bucket(Bucket=name)
    client.put_public_access_block(
        Bucket=name,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True,
            "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        },
    )
    yield {"name": name, "client": client, **s3_server}


def _admin_url(database_url: str, dbname: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path="/" + dbname))


@pytest.fixture
def postgres_database():
    """A throwaway database on the PostgreSQL server named by DATABASE_URL (CI sets it)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.skip("needs DATABASE_URL pointing at PostgreSQL (CI sets it)")
    import psycopg2

    name = f"deploy_{secrets.token_hex(4)}"
    admin = psycopg2.connect(_admin_url(url, urlsplit(url).path.lstrip("/") or "postgres"))
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _admin_url(url, name)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
            )
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture
def redis_url():
    """REDIS_URL (CI sets it) moved to database 13, so queued test tasks never meet other tests'."""
    url = os.environ.get("REDIS_URL", "")
    if not url.startswith("redis://"):
        pytest.skip("needs REDIS_URL (CI sets it)")
    import redis

    test_url = urlunsplit(urlsplit(url)._replace(path="/13"))
    client = redis.Redis.from_url(test_url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"Redis at {url} is not answering")
    client.flushdb()
    yield test_url
    client.flushdb()


def bucket_env(bucket) -> dict:
    return {
        "AWS_STORAGE_BUCKET_NAME": bucket["name"],
        "AWS_ACCESS_KEY_ID": bucket["access_key"],
        "AWS_SECRET_ACCESS_KEY": bucket["secret_key"],
        "AWS_S3_ENDPOINT_URL": bucket["endpoint"],
        "AWS_S3_REGION_NAME": bucket["region"],
    }


# What a process that loaded the training runtime has mapped: TensorFlow's shared libraries
# (libtensorflow_framework, _pywrap_tensorflow_internal, ...) live under site-packages/tensorflow/.
TRAINING_RUNTIME_MAPPINGS = ("/site-packages/tensorflow/", "/site-packages/keras/", "libtensorflow")
LITERT_MAPPING = "/site-packages/ai_edge_litert/"


def mapped_files(pid: int) -> set[str]:
    """The files a live process has mapped (its /proc/<pid>/maps): every shared library it loaded."""
    files = set()
    for line in open(f"/proc/{pid}/maps").read().splitlines():
        fields = line.split(None, 5)
        if len(fields) == 6 and fields[5].startswith("/"):
            files.add(fields[5].removesuffix(" (deleted)"))
    return files


def training_runtime_mapped(pid: int) -> list[str]:
    return sorted(f for f in mapped_files(pid) if any(marker in f for marker in TRAINING_RUNTIME_MAPPINGS))

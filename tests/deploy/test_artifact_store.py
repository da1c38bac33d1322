"""Trained model artifacts round-trip through the private bucket into a worker's local cache."""

import json
import shutil
import threading

import pytest
from django.test import override_settings

from butterflysite import artifact_store
from tests.deploy.conftest import ROOT

pytestmark = pytest.mark.deploy

SHIPPED = ROOT / "artifacts" / "inat_mobilenet_v2"


@pytest.fixture
def s3_storage(bucket, tmp_path):
    from storages.backends.s3 import S3Storage

    options = dict(
        bucket_name=bucket["name"], endpoint_url=bucket["endpoint"], access_key=bucket["access_key"],
        secret_key=bucket["secret_key"], region_name=bucket["region"], default_acl=None, file_overwrite=False,
    )
    with override_settings(ML_ARTIFACTS_STORAGE_PREFIX="artifacts", ML_ARTIFACTS_CACHE_DIR=tmp_path / "cache"):
        yield S3Storage(**options)


def test_publish_then_fetch_gives_identical_files(s3_storage, bucket, tmp_path):
    reference = artifact_store.publish(SHIPPED, "retrained_v2", storage=s3_storage)
    assert reference == "storage:artifacts/retrained_v2"
    keys = {item["Key"] for item in bucket["client"].list_objects_v2(Bucket=bucket["name"])["Contents"]}
    # The split export travels with it: serving.json and the trunk and tail it names.
    assert keys == {f"artifacts/retrained_v2/{name}" for name in (
        "model.keras", "model.tflite", "serving.json", "trunk_0.tflite", "tail.tflite", "metadata.json")}

    local = artifact_store.local_dir(reference, storage=s3_storage)
    assert local == tmp_path / "cache" / "retrained_v2"
    assert sorted(p.name for p in local.iterdir()) == sorted(key.rsplit("/", 1)[1] for key in keys)
    for path in local.iterdir():
        assert path.read_bytes() == (SHIPPED / path.name).read_bytes()
    # A second call uses the cache: it works even with the bucket emptied.
    for key in keys:
        bucket["client"].delete_object(Bucket=bucket["name"], Key=key)
    assert artifact_store.local_dir(reference, storage=s3_storage) == local


def test_concurrent_fetches_leave_one_complete_copy(s3_storage, tmp_path):
    reference = artifact_store.publish(SHIPPED, "race", storage=s3_storage)
    results, errors = [], []

    def fetch():
        try:
            results.append(artifact_store.local_dir(reference, storage=s3_storage))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["race"]  # no partial folders left
    assert (results[0] / "model.keras").stat().st_size == (SHIPPED / "model.keras").stat().st_size


def test_published_artifacts_are_immutable_and_names_checked(s3_storage):
    artifact_store.publish(SHIPPED, "once", storage=s3_storage)
    with pytest.raises(artifact_store.ArtifactStoreError, match="immutable"):
        artifact_store.publish(SHIPPED, "once", storage=s3_storage)
    with pytest.raises(artifact_store.ArtifactStoreError):
        artifact_store.local_dir("storage:artifacts/../etc", storage=s3_storage)
    with pytest.raises(artifact_store.ArtifactStoreError):
        artifact_store.local_dir("storage:artifacts/never-published", storage=s3_storage)


def test_the_fetched_artifact_loads_as_a_predictor(s3_storage):
    from ml.predict import Predictor

    local = artifact_store.local_dir(artifact_store.publish(SHIPPED, "loadable", storage=s3_storage), storage=s3_storage)
    predictor = Predictor.load(local)
    assert predictor.runtime == "split"  # shared trunks, served without TensorFlow
    assert predictor.classes == Predictor.load(SHIPPED).classes


def test_an_artifact_without_its_export_is_refused_and_nothing_uploaded(s3_storage, bucket, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(SHIPPED, old)
    (old / "model.tflite").unlink()
    with pytest.raises(artifact_store.ArtifactStoreError, match="no model.tflite in .*python -m ml export"):
        artifact_store.publish(old, "no_export", storage=s3_storage)
    assert "Contents" not in bucket["client"].list_objects_v2(Bucket=bucket["name"], Prefix="artifacts/no_export/")


def test_an_artifact_published_before_exports_still_fetches(s3_storage, bucket, tmp_path):
    from ml.predict import Predictor

    reference = artifact_store.publish(SHIPPED, "legacy", storage=s3_storage)
    for name in ("serving.json", "trunk_0.tflite", "tail.tflite"):  # published before split exports
        bucket["client"].delete_object(Bucket=bucket["name"], Key=f"artifacts/legacy/{name}")
    local = artifact_store.local_dir(reference, storage=s3_storage)
    assert sorted(p.name for p in local.iterdir()) == ["metadata.json", "model.keras", "model.tflite"]
    assert Predictor.load(local).runtime == "litert"
    shutil.rmtree(local)
    bucket["client"].delete_object(Bucket=bucket["name"], Key="artifacts/legacy/model.tflite")  # before exports
    local = artifact_store.local_dir(reference, storage=s3_storage)
    assert sorted(p.name for p in local.iterdir()) == ["metadata.json", "model.keras"]


def test_a_split_export_missing_a_file_is_refused_and_nothing_uploaded(s3_storage, bucket, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(SHIPPED, broken)
    (broken / "tail.tflite").unlink()
    with pytest.raises(artifact_store.ArtifactStoreError, match="no tail.tflite"):
        artifact_store.publish(broken, "no_tail", storage=s3_storage)
    assert "Contents" not in bucket["client"].list_objects_v2(Bucket=bucket["name"], Prefix="artifacts/no_tail/")


@pytest.mark.django_db
def test_a_retrained_version_is_published_to_the_bucket_for_every_worker(bucket, tmp_path):
    from classifier import artifacts, services
    from retraining.services import artifact_location_for_workers

    trained = tmp_path / "out" / "inat_mobilenet_v2-2-run5"
    shutil.copytree(SHIPPED, trained)
    metadata = json.loads((trained / "metadata.json").read_text())
    (trained / "metadata.json").write_text(json.dumps({**metadata, "version": "2"}))  # as ml.retrain writes it
    s3 = {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {
        "bucket_name": bucket["name"], "endpoint_url": bucket["endpoint"], "access_key": bucket["access_key"],
        "secret_key": bucket["secret_key"], "region_name": bucket["region"], "default_acl": None,
        "file_overwrite": False}}
    with override_settings(STORAGES={"default": s3, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}},
                           ML_ARTIFACTS_STORAGE_PREFIX="artifacts", ML_ARTIFACTS_CACHE_DIR=tmp_path / "cache"):
        reference = artifact_location_for_workers(trained)
        assert reference == "storage:artifacts/inat_mobilenet_v2-2-run5"
        shutil.rmtree(trained)  # another dyno: only the bucket has it
        version = services.model_version_register_trained(artifact_dir=reference, number=2)
        assert version.artifact_path == reference and not version.is_active
        assert artifacts.artifact_dir(version) == tmp_path / "cache" / "inat_mobilenet_v2-2-run5"
    # On one machine (local media) the folder itself is the location.
    assert artifact_location_for_workers(tmp_path / "local") == str(tmp_path / "local")

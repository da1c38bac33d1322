import json
import shutil

import pytest
from django.core.exceptions import ValidationError

from classifier import services
from classifier.models import ModelVersion

pytestmark = pytest.mark.django_db


def _artifact(root, name, created="2026-01-01T00:00:00+00:00", classes=("a", "b")):
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "metadata.json").write_text(
        json.dumps({"name": name, "classes": list(classes), "backbone": "efficientnet_b0", "created": created,
                    "metrics": {"top1": 0.9}, "unknown_threshold": 0.25})
    )
    return directory


def test_migrate_registered_the_shipped_default_model(settings):
    manifest = json.loads((settings.ML_ARTIFACTS_DIR / "manifest.json").read_text())
    version = ModelVersion.objects.get(is_default=True)
    assert version.name == json.loads((settings.ML_ARTIFACTS_DIR / manifest["default"] / "metadata.json").read_text())["name"]
    assert version.is_active and version.artifact_path == manifest["default"]
    assert ModelVersion.objects.filter(is_active=True).count() == len(manifest["artifacts"])
    assert len(version.classes) > 10


def test_register_shipped_is_idempotent_and_follows_the_manifest(settings, tmp_path):
    settings.ML_ARTIFACTS_DIR = tmp_path
    ModelVersion.objects.all().delete()
    _artifact(tmp_path, "one")
    _artifact(tmp_path, "two")
    (tmp_path / "manifest.json").write_text(json.dumps({"default": "two", "artifacts": ["one", "two", "missing"]}))

    services.model_versions_register_shipped()
    services.model_versions_register_shipped()

    versions = {v.name: v for v in ModelVersion.objects.all()}
    assert set(versions) == {"one", "two"}
    assert versions["two"].is_default and not versions["one"].is_default
    assert all(v.is_active for v in versions.values())
    assert versions["one"].artifact_path == "one"  # relative to ML_ARTIFACTS_DIR
    assert versions["one"].metrics == {"top1": 0.9} and versions["one"].classes == ["a", "b"]

    # Staff deactivate "one": a later migrate does not silently re-activate it.
    services.model_version_set_active(model_version=versions["one"], active=False)
    services.model_versions_register_shipped()
    assert not ModelVersion.objects.get(name="one").is_active


def test_retraining_into_the_same_directory_retires_the_old_version(settings, tmp_path):
    settings.ML_ARTIFACTS_DIR = tmp_path
    directory = _artifact(tmp_path, "m", created="2026-01-01T00:00:00+00:00")
    old = services.model_version_register(artifact_dir=directory)
    shutil.rmtree(directory)
    _artifact(tmp_path, "m", created="2026-02-01T00:00:00+00:00")
    new = services.model_version_register(artifact_dir="m")
    old.refresh_from_db()
    assert new.pk != old.pk and new.is_active and not old.is_active


def test_artifact_outside_the_artifacts_dir_keeps_an_absolute_path(tmp_path):
    version = services.model_version_register(artifact_dir=_artifact(tmp_path / "elsewhere", "x"))
    assert version.artifact_path == str((tmp_path / "elsewhere" / "x").resolve())


def test_unreadable_metadata_is_refused(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metadata.json").write_text("{not json")
    with pytest.raises(ValidationError):
        services.model_version_register(artifact_dir=tmp_path / "bad")
    with pytest.raises(ValidationError):
        services.model_version_register(artifact_dir=tmp_path / "absent")


def test_one_default_at_a_time(shipped_model, second_model):
    services.model_version_make_default(model_version=second_model)
    assert list(ModelVersion.objects.filter(is_default=True)) == [second_model]
    services.model_version_set_active(model_version=second_model, active=False)
    second_model.refresh_from_db()
    assert not second_model.is_active and not second_model.is_default


def test_register_a_model_published_to_storage(settings, tmp_path):
    from butterflysite import artifact_store
    from classifier import artifacts

    settings.ML_ARTIFACTS_CACHE_DIR = tmp_path / "cache"
    source = _artifact(tmp_path / "trained", "late_model", classes=("x", "y", "z"))
    (source / "model.keras").write_bytes(b"not really a model, never loaded here")
    (source / "model.tflite").write_bytes(b"not really an export, never loaded here")  # publish needs both
    reference = artifact_store.publish(source, "late_model")

    version = services.model_version_register(artifact_dir=reference)
    assert version.artifact_path == reference and version.classes == ["x", "y", "z"]
    assert artifacts.artifact_dir(version) == tmp_path / "cache" / "late_model"
    assert (tmp_path / "cache" / "late_model" / "model.keras").is_file()

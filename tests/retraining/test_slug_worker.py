"""A retrain sent to a worker installed from requirements.txt alone (the Heroku slug: no
TensorFlow, Keras, scikit-learn or matplotlib) fails with a clear message, not an ImportError."""

import pytest

from retraining import services as retraining_services
from retraining.models import RetrainRun


@pytest.mark.django_db
def test_a_retrain_on_a_worker_without_the_training_extras_fails_clearly(monkeypatch, tmp_path, settings):
    settings.RETRAIN_OUTPUT_DIR = tmp_path / "retrained"
    # This machine has the extras; one module that no environment has stands for a missing one.
    monkeypatch.setattr(retraining_services, "TRAINING_MODULES",
                        ("tensorflow", "keras", "no_such_training_module_g2"))
    run = retraining_services.retrain_run_create()
    run = retraining_services.retrain_run_execute(run_id=run.pk)
    assert run.status == RetrainRun.Status.FAILED
    assert "This worker cannot retrain: no_such_training_module_g2 not installed" in run.error
    assert "requirements-ml.txt" in run.error and "docs/retraining.md" in run.error
    assert not (tmp_path / "retrained").exists()  # nothing written

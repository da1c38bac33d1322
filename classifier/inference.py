"""The per-process model cache: the web app's one place that loads and runs model artifacts.

Web processes import this module but never call `get_predictor`/`preload_active`, so they never
load a model: every `ml` import below happens inside a function. Celery worker processes
load each active model version once (on `worker_process_init`, see classifier/tasks.py) and keep
it in `_predictors`, keyed by ModelVersion id and artifact path.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from django.conf import settings

from classifier import artifacts

logger = logging.getLogger(__name__)

_predictors: dict[tuple[int, str], object] = {}
_identifiers: dict[str, object] = {}
_lock = threading.Lock()


class InferenceError(Exception):
    """A model version cannot be loaded or run (missing or corrupt artifact)."""


def _load_once(cache: dict, key, load, what: str):
    """`cache[key]`, loading it with `load()` the first time (once per process, under the lock);
    any error becomes an InferenceError naming `what`."""
    loaded = cache.get(key)
    if loaded is not None:
        return loaded
    with _lock:
        loaded = cache.get(key)
        if loaded is None:
            try:
                loaded = load()
            except Exception as error:
                raise InferenceError(f"cannot load {what}: {error}") from error
            logger.info("loaded %s", what)
            cache[key] = loaded
    return loaded


def get_predictor(model_version):
    """The loaded `ml.predict.Predictor` for a ModelVersion, loading it on first use."""
    try:
        key = (model_version.pk, str(artifacts.artifact_dir(model_version)))
    except artifacts.ArtifactUnavailable as error:
        raise InferenceError(f"cannot fetch model {model_version}: {error}") from error
    from ml.predict import Predictor

    # missing (OSError, ArtifactError) or corrupt (anything the runtime raises on a bad file)
    return _load_once(_predictors, key, lambda: Predictor.load(key[1]), f"model {model_version} from {key[1]}")


def forget_inactive(active_ids) -> None:
    """Drop predictors of versions that are no longer active (frees their memory)."""
    with _lock:
        for key in [key for key in _predictors if key[0] not in set(active_ids)]:
            del _predictors[key]


def loaded_keys() -> list[tuple[int, str]]:
    return list(_predictors)


def input_size(model_version) -> int:
    """The square side, in pixels, the version's model takes (loads it if needed)."""
    return get_predictor(model_version).metadata.input_size


def predict_pixels(model_version, pixels, top_k: int = 5, extra_ms: float = 0.0):
    """Run one model version once on a whole batch decoded with `ml.images.to_batch` at its
    input size: one `ml.predict.Prediction` per row. `extra_ms` (decode time) goes into latency."""
    predictor = get_predictor(model_version)
    try:
        return predictor.predict_pixels(pixels, top_k=top_k, extra_ms=extra_ms)
    except ValueError as error:
        raise InferenceError(f"model {model_version} could not run on the batch: {error}") from error


def identifier_installed() -> bool:
    """Whether settings.ML_IDENTIFIER_DIR holds an identifier artifact (without loading it)."""
    from ml.identify import PARAMETERS_FILE

    return (Path(settings.ML_IDENTIFIER_DIR) / PARAMETERS_FILE).is_file()


def get_identifier():
    """The loaded `ml.identify.Identifier` of settings.ML_IDENTIFIER_DIR, loaded once per process;
    None when no identifier is installed there. Raises InferenceError when it cannot be loaded."""
    if not identifier_installed():
        return None
    key = str(Path(settings.ML_IDENTIFIER_DIR).resolve())
    from ml.identify import Identifier

    # IdentifierError, or anything the runtime raises on a corrupt file
    return _load_once(_identifiers, key, lambda: Identifier.load(key), f"the identifier in {key}")


def openset_signals(identifier, pixels) -> list[dict]:
    """The identifier's open-set signals for a batch decoded at its input size, one dict per row."""
    try:
        return identifier.signals(pixels)
    except ValueError as error:
        raise InferenceError(f"the identifier could not run on the batch: {error}") from error


def preload_active() -> None:
    """Load every active model version and the identifier now, so the first task does not pay for it."""
    from classifier.selectors import model_version_list_active

    for model_version in model_version_list_active():
        try:
            get_predictor(model_version)
        except InferenceError:
            logger.exception("could not preload %s", model_version)
    try:
        get_identifier()
    except InferenceError:
        logger.exception("could not preload the identifier")

"""The identification: each kind of answer from the pure `identify`, the artifact, and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from ml import identify
from ml.identify import Candidate, Identification, Identifier

ROOT = Path(__file__).resolve().parents[2]
IDENTIFIER_DIR = ROOT / "artifacts" / "identifier"

# Parameters of the shape scripts/build_identifier.py writes, with round numbers: constructed
# inputs then land on each side of each threshold on purpose.
PARAMETERS = {
    "format_version": 1,
    "input_size": 224,
    "classes": ["monarch", "viceroy", "queen", "painted lady"],
    "inat_lepidoptera": [0, 1],
    "lepidoptera_weight": 10.0,
    "known_bias": 0.0,
    "answer_source": "average",
    "thresholds": {"lepidoptera": 0.0, "known": 0.5, "species": 0.6, "uncertain_mass": 0.7, "third_candidate": 0.1},
}
BUTTERFLY = {"inat_lepidoptera": 0.9, "imagenet_butterflies": 0.8, "imagenet_insects": 0.1,
             "lepidoptera_similarity": 0.8, "known": 0.9, "nearest": "monarch", "similarity": 0.8}


def answer(tops, signals=BUTTERFLY, parameters=PARAMETERS) -> Identification:
    return Identifier(parameters).identify(tops, signals)


def test_species_when_the_models_agree():
    result = answer([[("monarch", 0.9), ("viceroy", 0.05)], [("monarch", 0.8), ("queen", 0.1)]])
    assert result.kind == "species" and result.label == "monarch"
    assert result.candidates[0] == Candidate("monarch", 0.85)


def test_uncertain_between_look_alikes():
    result = answer([[("monarch", 0.5), ("viceroy", 0.4), ("queen", 0.05)], [("viceroy", 0.5), ("monarch", 0.45)]])
    assert result.kind == "uncertain" and result.label is None
    # The third is under third_candidate (0.025 < 0.1): two look-alikes, best first.
    assert [c.label for c in result.candidates] == ["monarch", "viceroy"]


def test_unknown_species_when_it_does_not_look_like_a_known_one():
    result = answer([[("monarch", 0.9)]], {**BUTTERFLY, "known": 0.2})
    assert result.kind == "unknown_species" and result.label is None
    assert [c.label for c in result.candidates] == ["monarch"]  # the nearest known species


def test_unknown_species_when_the_mass_is_spread():
    result = answer([[("monarch", 0.3), ("viceroy", 0.2), ("queen", 0.15), ("painted lady", 0.1)]])
    assert result.kind == "unknown_species"


def test_not_butterfly():
    cat = {"inat_lepidoptera": 0.3, "imagenet_butterflies": 0.0, "imagenet_insects": 0.0,
           "lepidoptera_similarity": 0.3, "known": 0.9}
    result = answer([[("painted lady", 0.7)]], cat)
    assert result.kind == "not_butterfly" and result.label is None
    assert result.scores["lepidoptera"] < PARAMETERS["thresholds"]["lepidoptera"]


def test_the_default_answer_source_reads_the_first_model_only():
    tops = [[("monarch", 0.9)], [("viceroy", 0.95)], [("viceroy", 0.95)]]
    assert answer(tops, parameters={**PARAMETERS, "answer_source": "default"}).label == "monarch"
    assert answer(tops).label == "viceroy"


def test_inputs_are_rounded_as_the_web_app_stores_them():
    exact = answer([[("monarch", 0.600000004)]])
    stored = answer([[("monarch", 0.6)]])
    assert exact == stored and exact.kind == "species"


def test_to_dict_round_trips_through_json():
    result = answer([[("monarch", 0.5), ("viceroy", 0.45)]])
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) == {"kind", "label", "candidates", "scores"}
    assert Identification.from_dict(data) == result


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        Identification("butterfly", None, (), {})


def test_combine_tops_averages_any_number_of_models():
    assert identify.combine_tops([[("a", 0.6), ("b", 0.4)], [("b", 1.0)]]) == [("b", 0.7), ("a", 0.3)]
    assert identify.combine_tops([]) == []


# -- the shipped artifact --------------------------------------------------------------------

@pytest.fixture(scope="module")
def identifier():
    if not (IDENTIFIER_DIR / identify.MODEL_FILE).is_file():
        pytest.skip(f"needs {IDENTIFIER_DIR} (built by scripts/build_identifier.py)")
    return Identifier.load(IDENTIFIER_DIR)


def test_artifact_loads_and_is_deterministic(identifier):
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    first, second = identifier.signals(pixels), identifier.signals(pixels[::-1])[::-1]
    assert first == second
    assert json.loads(json.dumps(first)) == first
    assert set(identify.KINDS) >= {identifier.identify([[("monarch", 0.9)]], s).kind for s in first}


def test_a_missing_artifact_is_a_clear_error(tmp_path):
    with pytest.raises(identify.IdentifierError, match="parameters.json"):
        Identifier.load(tmp_path)


def test_real_photos_get_the_right_kind(identifier, butterflies_dir):
    from ml import images, openset
    from ml.predict import Predictor

    predictors = [Predictor.load(d) for d in identify.shipped_artifacts(ROOT / "artifacts")]
    monarch = sorted((butterflies_dir / "test" / "monarch").iterdir())[:3]
    cat = openset.non_butterfly_photos()["skimage/chelsea.png"]
    pixels = np.stack([images.to_array(p, 224) for p in [*monarch, cat]])
    tops = [[[(label.label, round(label.probability, 6)) for label in p.top] for p in predictor.predict_pixels(pixels)]
            for predictor in predictors]
    results = [identifier.identify([t[i] for t in tops], s) for i, s in enumerate(identifier.signals(pixels))]
    assert [(r.kind, r.label) for r in results[:3]] == [("species", "monarch")] * 3
    assert results[3].kind == "not_butterfly"


# -- the CLI ---------------------------------------------------------------------------------

def test_cli_answers_good_images_and_flags_bad_ones(identifier, butterflies_dir, tmp_path, capsys):
    from ml.cli import main

    photo = sorted((butterflies_dir / "test" / "monarch").iterdir())[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    status = main(["identify", str(broken), str(photo), str(tmp_path / "missing.jpg")])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1
    assert [set(line) for line in lines] == [{"image", "error"},
                                            {"image", "kind", "label", "name", "candidates"},
                                            {"image", "error"}]
    assert lines[1]["kind"] == "species" and lines[1]["label"] == "monarch" and lines[1]["name"] == "Monarch"


# -- serving the open-set model with LiteRT ----------------------------------------------------

needs_export = pytest.mark.skipif(not (IDENTIFIER_DIR / identify.TFLITE_FILE).is_file(),
                                  reason=f"needs {IDENTIFIER_DIR / identify.TFLITE_FILE} (python -m ml export-identifier)")


needs_split = pytest.mark.skipif(not (IDENTIFIER_DIR / "serving.json").is_file(),
                                 reason=f"needs {IDENTIFIER_DIR / 'serving.json'} (python -m ml export-identifier)")


@needs_export
@needs_split
@pytest.mark.parametrize("runtime", [None, identify.LITERT])
def test_shipped_identifier_serves_its_export_without_tensorflow(runtime):
    import subprocess
    import sys

    expected = runtime or identify.SPLIT  # by default, the split export (shared trunks)
    code = (
        "import sys, numpy as np\n"
        "from ml.identify import Identifier\n"
        f"identifier = Identifier.load({str(IDENTIFIER_DIR)!r}, runtime={runtime!r})\n"
        f"assert identifier.runtime == {expected!r}, identifier.runtime\n"
        "[s] = identifier.signals(np.full((1, 224, 224, 3), 128, np.float32))\n"
        "assert 'known' in s and 'nearest' in s, s\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@needs_export
@needs_split
@pytest.mark.parametrize("runtime", [identify.SPLIT, identify.LITERT])
def test_export_gives_the_keras_signals_and_answers_on_real_photos(butterflies_dir, runtime):
    from ml import export

    photos = export.identifier_check_photos(butterflies_dir.parent, per_folder=1)[::6]
    keras_identifier = Identifier.load(IDENTIFIER_DIR, runtime=identify.KERAS)
    served = Identifier.load(IDENTIFIER_DIR, runtime=runtime)
    assert served.runtime == runtime
    figures = export.compare_identifier(keras_identifier, served, photos,
                                        export.shipped_tops(photos, ROOT / "artifacts"))
    assert figures["photos"] == len(photos) >= 10
    assert max(figures["max_output_diff"].values()) < export.MAX_PROBABILITY_DIFF
    assert figures["max_signal_diff"] < export.MAX_PROBABILITY_DIFF
    assert figures["nearest_disagreements"] == figures["identification_disagreements"] == 0


def test_an_artifact_without_export_is_served_by_keras_with_a_warning(tmp_path, caplog):
    if not (IDENTIFIER_DIR / identify.MODEL_FILE).is_file():
        pytest.skip(f"needs {IDENTIFIER_DIR} (built by scripts/build_identifier.py)")
    for name in (identify.PARAMETERS_FILE, identify.ARRAYS_FILE, identify.MODEL_FILE):
        (tmp_path / name).symlink_to(IDENTIFIER_DIR / name)
    with caplog.at_level("WARNING", logger="ml.identify"):
        old = Identifier.load(tmp_path)
    assert old.runtime == identify.KERAS
    assert "no model.tflite" in caplog.text
    with pytest.raises(identify.IdentifierError, match="no model.tflite"):
        Identifier.load(tmp_path, runtime=identify.LITERT)
    with pytest.raises(identify.IdentifierError, match="no serving.json"):
        Identifier.load(tmp_path, runtime=identify.SPLIT)


@needs_export
def test_an_artifact_without_a_split_export_is_served_from_model_tflite(tmp_path):
    for name in (identify.PARAMETERS_FILE, identify.ARRAYS_FILE, identify.TFLITE_FILE):
        (tmp_path / name).symlink_to(IDENTIFIER_DIR / name)
    assert Identifier.load(tmp_path).runtime == identify.LITERT

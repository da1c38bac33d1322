"""One answer per photo: the classify core stores it (each kind), pages, the API and the admin
show it, a staff label overrides it (the models' answer stays on record), the gallery's species
filter and the review queue use it, and `identify_photos` queues the photos that lack one."""

import html
import io
import json
import re
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.urls import reverse

from classifier import selectors, services
from classifier.models import NOT_A_BUTTERFLY, ModelVersion, Photo
from ml.identify import Candidate, Identification, Identifier
from tests.classifier.factories import PhotoFactory, PredictionFactory

pytestmark = pytest.mark.django_db

# A real Identifier with chosen parameters (no open-set model: `identify` is pure numpy).
PARAMETERS = {
    "classes": ["monarch", "viceroy", "peacock"],
    "lepidoptera_weight": 0.0,
    "thresholds": {"lepidoptera": -3.0, "known": 0.5, "species": 0.8, "uncertain_mass": 0.9},
}
BUTTERFLY = {"imagenet_butterflies": 0.9, "inat_lepidoptera": 0.9, "imagenet_insects": 0.0, "known": 0.95}
CAT = {"imagenet_butterflies": 0.0, "inat_lepidoptera": 0.0, "imagenet_insects": 0.0, "known": 0.01}
MOTH = {"imagenet_butterflies": 0.5, "inat_lepidoptera": 0.9, "imagenet_insects": 0.3, "known": 0.1}


def _top(*pairs):
    return [{"label": label, "probability": p} for label, p in pairs]


def _classified(model, top, signals):
    photo = PhotoFactory()
    PredictionFactory(photo=photo, model_version=model, label=top[0]["label"], probability=top[0]["probability"], top=top)
    services.photos_identify(photo_ids=[photo.pk], identifier=Identifier(PARAMETERS), signals={photo.pk: signals})
    photo.refresh_from_db()
    return photo


def _answer_title(page: str) -> str:
    """The text of the result's heading (templates/classifier/_result.html, #answer-title)."""
    heading = re.search(r'<h2 class="answer-title" id="answer-title">(.*?)</h2>', page, re.S).group(1)
    return re.sub(r"<[^>]+>", "", heading).strip()


@pytest.fixture
def model(shipped_model):
    ModelVersion.objects.exclude(pk=shipped_model.pk).update(is_active=False)
    return shipped_model  # the only active model, the default


@pytest.mark.parametrize("top, signals, kind, label", [
    (_top(("monarch", 0.95), ("viceroy", 0.04)), BUTTERFLY, "species", "monarch"),
    (_top(("monarch", 0.55), ("viceroy", 0.42)), BUTTERFLY, "uncertain", None),
    (_top(("peacock", 0.9), ("monarch", 0.05)), MOTH, "unknown_species", None),
    (_top(("monarch", 0.9), ("viceroy", 0.05)), CAT, "not_butterfly", None),
])
def test_each_kind_of_answer_is_stored_and_shown(model, client, top, signals, kind, label):
    photo = _classified(model, top, signals)
    assert photo.identification_kind == kind and photo.identification_label == (label or "")
    assert photo.openset_signals == signals and photo.identification["kind"] == kind
    answer = selectors.photo_answer(photo)
    assert (answer.kind, answer.label, answer.source) == (kind, label, "models")

    client.force_login(photo.owner)
    page = client.get(reverse("classifier:photo_detail", args=[photo.pk])).content.decode()
    assert f'data-kind="{kind}"' in page and 'data-source="models"' in page
    heading = {"species": "Monarch — Danaus plexippus", "uncertain": "Monarch or Viceroy? Compare them",
               "unknown_species": "A butterfly or moth we don't know yet", "not_butterfly": "This doesn't look like a butterfly"}[kind]
    assert _answer_title(page) == heading
    assert 'class="model"' in page  # the per-model detail stays under the answer
    gallery = client.get(reverse("classifier:gallery")).content.decode()
    words = {"species": "Monarch", "uncertain": "Monarch or Viceroy?", "unknown_species": "A butterfly or moth we don't know yet",
             "not_butterfly": "Not a butterfly"}[kind]
    assert f'data-kind="{kind}"' in gallery and f"Your photo: {words} (" in html.unescape(gallery)  # the alt text


def test_staff_label_overrides_the_answer_which_stays_on_record(model, client, admin_user):
    photo = _classified(model, _top(("monarch", 0.95), ("viceroy", 0.04)), BUTTERFLY)
    services.label_correct(photo=photo, new_label="viceroy", corrected_by=admin_user)
    photo.refresh_from_db()
    answer = selectors.photo_answer(photo)
    assert (answer.kind, answer.label, answer.name, answer.source) == ("species", "viceroy", "Viceroy", "staff")
    assert answer.scientific_name and photo.identification_label == "monarch"  # the models' answer, kept

    services.label_correct(photo=photo, new_label=NOT_A_BUTTERFLY, corrected_by=admin_user)
    photo.refresh_from_db()
    answer = selectors.photo_answer(photo)
    assert (answer.kind, answer.label, answer.source) == ("not_butterfly", None, "staff")
    client.force_login(photo.owner)
    page = client.get(reverse("classifier:photo_detail", args=[photo.pk])).content.decode()
    assert _answer_title(page) == "This doesn't look like a butterfly" and 'data-source="staff"' in page
    assert "checked by staff" in page


def test_api_carries_the_identification(model, api_client):
    photo = _classified(model, _top(("monarch", 0.55), ("viceroy", 0.42)), BUTTERFLY)
    unanswered = PhotoFactory(owner=photo.owner)
    api_client.force_authenticate(photo.owner)
    body = api_client.get(f"/api/photos/{photo.pk}/").json()
    assert body["identification"] == {
        "kind": "uncertain", "label": None, "name": None, "scientific_name": None, "source": "models",
        "candidates": [{"label": "monarch", "probability": 0.55}, {"label": "viceroy", "probability": 0.42}],
    }
    listed = {item["id"]: item["identification"] for item in api_client.get("/api/photos/").json()["results"]}
    assert listed == {photo.pk: body["identification"], unanswered.pk: None}


def test_species_filter_and_admin_follow_the_answer(model, client, admin_client):
    sure = _classified(model, _top(("monarch", 0.95), ("viceroy", 0.04)), BUTTERFLY)
    unsure = _classified(model, _top(("monarch", 0.55), ("viceroy", 0.42)), BUTTERFLY)
    Photo.objects.filter(pk=unsure.pk).update(owner=sure.owner)
    client.force_login(sure.owner)
    page = client.get(reverse("classifier:gallery") + "?species=monarch").content.decode()
    assert f'id="photo-{sure.pk}"' in page and f'id="photo-{unsure.pk}"' not in page
    assert selectors.photo_species_for_user(sure.owner) == ["monarch"]

    changelist = admin_client.get(reverse("admin:classifier_photo_changelist") + "?answer=uncertain").content.decode()
    assert "uncertain: Monarch or Viceroy" in changelist and "species: Monarch" not in changelist


def test_review_queue_ranks_answers_that_name_no_species_higher(model):
    sure = _classified(model, _top(("monarch", 0.9), ("viceroy", 0.05)), BUTTERFLY)
    unknown = _classified(model, _top(("peacock", 0.9), ("monarch", 0.05)), MOTH)
    queue = selectors.photo_review_queue()
    assert [item.photo.pk for item in queue][:2] == [unknown.pk, sure.pk]
    assert "answer: unknown species" in queue[0].reasons


def test_identification_round_trips_through_the_stored_dict():
    answer = Identification("uncertain", None, (Candidate("monarch", 0.5), Candidate("viceroy", 0.45)), {"x": 1.0})
    assert Identification.from_dict(json.loads(json.dumps(answer.to_dict()))) == answer


def test_identify_photos_queues_finished_photos_without_an_answer(model, settings, tmp_path,
                                                                   django_capture_on_commit_callbacks):
    out = io.StringIO()
    settings.ML_IDENTIFIER_DIR = tmp_path / "absent"
    call_command("identify_photos", stdout=out)  # no identifier installed: nothing to do
    assert "nothing queued" in out.getvalue()

    settings.ML_IDENTIFIER_DIR = tmp_path / "identifier"
    settings.ML_IDENTIFIER_DIR.mkdir()
    (settings.ML_IDENTIFIER_DIR / "parameters.json").write_text(json.dumps(PARAMETERS))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command("identify_photos", stdout=out)
    assert len(callbacks) == 0 and "queued 0 photo(s)" in out.getvalue()

    old = [PhotoFactory() for _ in range(2)]
    _classified(model, _top(("monarch", 0.95)), BUTTERFLY)  # has its answer
    PhotoFactory(status=Photo.Status.PENDING)  # its own task is coming
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        call_command("identify_photos", stdout=out)
    assert len(callbacks) == 2 and "queued 2 photo(s)" in out.getvalue()
    assert services.photos_queue_unidentified() == [p.pk for p in old]


IDENTIFIER_DIR = Path(django_settings.BASE_DIR) / "artifacts" / "identifier"


@pytest.mark.slow
def test_a_real_photo_through_the_core_with_the_real_identifier(shipped_model, butterflies_dir, settings):
    """The shipped models and the shipped identifier on a real monarch photo: the batch task's core
    stores the predictions, the open-set signals and a species answer."""
    if not (IDENTIFIER_DIR / "parameters.json").is_file():
        pytest.skip(f"no identifier artifact in {IDENTIFIER_DIR} (ml/identify.py, scripts/build_identifier.py)")
    settings.ML_IDENTIFIER_DIR = IDENTIFIER_DIR
    from django.core.files.uploadedfile import SimpleUploadedFile

    path = sorted((butterflies_dir / "test" / "monarch").iterdir())[0]
    photo = services.photo_create(owner=PhotoFactory().owner,
                                  upload=SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg"))
    photo = services.photo_classify(photo_id=photo.pk)
    assert photo.status == Photo.Status.DONE and photo.predictions.count() >= 1
    assert photo.openset_signals and photo.identification
    assert (photo.identification_kind, photo.identification_label) == ("species", "monarch")
    assert selectors.photo_answer(photo).name == "Monarch"
    # Computed again from the stored predictions and signals, the answer is the same.
    stored = photo.identification
    Photo.objects.filter(pk=photo.pk).update(identification=None, identification_kind="", identification_label="")
    photo = services.photo_classify(photo_id=photo.pk)
    assert photo.identification == stored

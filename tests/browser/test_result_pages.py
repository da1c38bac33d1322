"""Issue 12 in a real browser: the result page answers first in words for each kind of answer, with
reference photos of the species and of each candidate, the per-model detail behind "How the models
voted", a staff label marked "checked by staff", and "Not right?" with the staff decision shown to the
owner; alt text carries the answer; axe-core finds no serious or critical violation on any of them."""

import re

import pytest

from classifier.models import LabelCorrection, ModelVersion, Photo
from ml import species as catalogue
from suggestions.models import UserSuggestion
from tests.browser.conftest import axe_serious
from tests.classifier.factories import PredictionFactory, UserFactory

pytestmark = [pytest.mark.browser]

VERSION_LABEL = re.compile(r"^v\d+ · trained \d{1,2} [A-Z][a-z]{2} \d{4}$")


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def identified_photo(photo_of):
    """A photo with a stored models' answer (and the predictions behind it), as the classify core leaves one."""
    def make(owner, kind, label=None, candidates=(), staff_label="", folder=None):
        identification = {"kind": kind, "label": label, "scores": {},
                          "candidates": [{"label": key, "probability": p} for key, p in candidates]}
        photo = photo_of(owner, folder, identification=identification, identification_kind=kind,
                         identification_label=label or "", label=staff_label)
        for version in ModelVersion.objects.filter(is_active=True):
            top = [{"label": key, "probability": p} for key, p in candidates]
            PredictionFactory(photo=photo, model_version=version, label=top[0]["label"], probability=top[0]["probability"], top=top)
        return photo

    return make


@pytest.fixture
def owner(transactional_db):
    return UserFactory()


CASES = {
    "species": dict(kind="species", label="monarch", candidates=[("monarch", 0.97), ("viceroy", 0.02)], folder="monarch"),
    "uncertain": dict(kind="uncertain", candidates=[("monarch", 0.55), ("viceroy", 0.41)], folder="viceroy"),
    "unknown_species": dict(kind="unknown_species", candidates=[("question mark", 0.3), ("eastern coma", 0.2)],
                            folder="other_lepidoptera/milberts tortoiseshell"),
    "not_butterfly": dict(kind="not_butterfly", candidates=[("sixspot burnet", 0.1)], folder="skimage:chelsea"),
    "staff": dict(kind="species", label="monarch", candidates=[("monarch", 0.9), ("viceroy", 0.05)], staff_label="viceroy",
                  folder="viceroy"),
}
HEADINGS = {
    "species": "Monarch — Danaus plexippus",
    "uncertain": "Monarch or Viceroy? Compare them",
    "unknown_species": "A butterfly or moth we don't know yet",
    "not_butterfly": "This doesn't look like a butterfly",
    "staff": "Viceroy — Limenitis archippus",
}
ALT = {"species": "Monarch", "uncertain": "Monarch or Viceroy?", "unknown_species": "A butterfly or moth we don't know yet",
       "not_butterfly": "Not a butterfly", "staff": "Viceroy"}
REFERENCE_PHOTOS = {"species": 3, "uncertain": 6, "unknown_species": 0, "not_butterfly": 0, "staff": 3}


@pytest.mark.parametrize("case", list(CASES))
def test_the_answer_comes_first_in_words(case, page, phone_page, live_server, owner, axe_source, sign_in_as, screenshot,
                                          identified_photo):
    photo = identified_photo(owner, **CASES[case])
    for viewer in (page, phone_page):
        sign_in_as(viewer, owner)
        viewer.goto(live_server.url + f"/photos/{photo.pk}/")
        assert viewer.locator("#answer-title").inner_text() == HEADINGS[case]
        # The answer comes first: above the photo on a phone, left of it on a desktop.
        answer, image = viewer.locator("#answer").bounding_box(), viewer.locator("#photo-image").bounding_box()
        assert answer["y"] < image["y"] if viewer is phone_page else answer["x"] < image["x"]
        assert viewer.locator("#answer .reference-photos img").count() == REFERENCE_PHOTOS[case]
        viewer.wait_for_function("() => [...document.querySelectorAll('#answer img')].every(i => i.complete && i.naturalWidth > 0)")
        assert (viewer.locator("#checked-by-staff").count() == 1) == (case == "staff")
        assert viewer.locator("#photo-image").get_attribute("alt") == f"Your photo: {ALT[case]}"
        assert axe_serious(viewer, axe_source) == []
    screenshot(f"photo-{case.replace('_', '-')}", on=page)
    screenshot(f"photo-{case.replace('_', '-')}-phone", on=phone_page)


def test_species_and_candidates_link_to_their_species_pages_and_carry_field_notes(page, live_server, owner, sign_in_as,
                                                                                   identified_photo):
    photo = identified_photo(owner, **CASES["uncertain"])
    sign_in_as(page, owner)
    page.goto(live_server.url + f"/photos/{photo.pk}/")
    candidates = page.locator("#candidates [data-candidate]")
    assert candidates.evaluate_all("els => els.map(e => e.dataset.candidate)") == ["monarch", "viceroy"]
    for i, key in enumerate(["monarch", "viceroy"]):
        assert candidates.nth(i).locator(".field-note").inner_text() == catalogue.get(key).note
    candidates.nth(1).locator(".species-page-link").click()
    page.wait_for_url(re.compile(r"/species/viceroy/$"))


def test_how_the_models_voted_is_a_closed_disclosure_with_readable_bars_and_versions(page, live_server, owner, sign_in_as,
                                                                                      identified_photo):
    photo = identified_photo(owner, **CASES["species"])
    sign_in_as(page, owner)
    page.goto(live_server.url + f"/photos/{photo.pk}/")
    details = page.locator("#models-voted")
    assert details.get_attribute("open") is None
    assert details.locator("summary").inner_text() == "How the models voted"
    assert not page.locator("#models-voted [data-model]").first.is_visible()
    details.locator("summary").click()
    models = page.locator("#models-voted [data-model]")
    assert models.count() == ModelVersion.objects.filter(is_active=True).count() >= 1
    for i in range(models.count()):
        assert VERSION_LABEL.match(models.nth(i).locator(".model-version").inner_text())
        first = models.nth(i).locator("[data-label]").first
        assert first.locator(".label").inner_text() == "Monarch" and first.locator(".pct").inner_text() == "97.0%"
        assert first.locator(".bar").bounding_box()["height"] >= 12  # readable, not an 11 px sliver
        # No model name runs out of its card.
        assert models.nth(i).evaluate("el => el.scrollWidth <= el.clientWidth + 1")


def test_not_right_suggestion_is_stored_and_the_owner_sees_the_staff_decision(page, live_server, owner, sign_in_as, screenshot,
                                                                               identified_photo):
    photo = identified_photo(owner, **CASES["species"])
    sign_in_as(page, owner)
    page.goto(live_server.url + f"/photos/{photo.pk}/")
    page.locator("#not-right summary").click()
    page.select_option("#suggestion-label", "viceroy")
    page.click("#suggestion-submit")
    page.wait_for_url(live_server.url + f"/photos/{photo.pk}/")
    assert "Staff will look at this photo" in page.locator(".messages").inner_text()
    [suggestion] = UserSuggestion.objects.filter(photo=photo)
    assert (suggestion.user, suggestion.label) == (owner, "viceroy")
    assert Photo.objects.get(pk=photo.pk).label == ""  # nothing overwritten
    assert "Waiting for staff" in page.locator("#suggestion-history").inner_text()
    screenshot("photo-not-right")

    staff = UserFactory(is_staff=True)
    LabelCorrection.objects.create(photo=photo, corrected_by=staff, old_label="", new_label="viceroy")
    Photo.objects.filter(pk=photo.pk).update(label="viceroy")
    page.reload()
    assert "Staff decided: Viceroy" in page.locator("#suggestion-history").inner_text()
    assert page.locator("#answer-title").inner_text().startswith("Viceroy") and page.locator("#checked-by-staff").count() == 1


def test_gallery_cards_say_the_answer_in_words_and_in_alt_text(page, live_server, owner, sign_in_as, identified_photo):
    for case in ("species", "uncertain", "not_butterfly"):
        identified_photo(owner, **CASES[case])
    sign_in_as(page, owner)
    page.goto(live_server.url + "/")
    alts = page.locator("#gallery img").evaluate_all("imgs => imgs.map(i => i.alt)")
    assert any("Monarch or Viceroy?" in alt for alt in alts)
    assert any(alt.startswith("Your photo: Monarch (") for alt in alts)
    assert any("Not a butterfly" in alt for alt in alts)
    assert not any(re.fullmatch(r"Photo \d+", alt) for alt in alts)

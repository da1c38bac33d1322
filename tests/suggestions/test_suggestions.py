""""Not right?": the owner suggests a label; stored with who and when, never overwriting anything;
staff see it in the admin; the owner sees the staff decision; the API does the same."""

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from classifier.models import Photo
from suggestions import selectors, services
from suggestions.models import ANOTHER_SPECIES, UserSuggestion
from tests.classifier.factories import LabelCorrectionFactory, PhotoFactory, UserFactory

pytestmark = pytest.mark.django_db


def test_a_suggestion_is_stored_with_who_and_when_and_changes_no_label(photo, owner):
    first = services.suggestion_create(photo=photo, user=owner, label="viceroy")
    second = services.suggestion_create(photo=photo, user=owner, label="not a butterfly")
    photo.refresh_from_db()
    assert photo.label == "" and photo.corrections.count() == 0  # nothing overwritten
    assert [(s.user, s.label) for s in UserSuggestion.objects.filter(photo=photo)] == [
        (owner, "not a butterfly"), (owner, "viceroy")]  # both kept, newest first
    assert first.created_at <= second.created_at


@pytest.mark.parametrize("label", ["viceroy", "crecent", "not a butterfly", ANOTHER_SPECIES, "  monarch "])
def test_catalogue_keys_and_the_two_other_answers_are_accepted(photo, owner, label):
    assert services.suggestion_create(photo=photo, user=owner, label=label).label == label.strip()


@pytest.mark.parametrize("label", ["", "Monarch", "dog", None, 7, ["monarch"]])
def test_a_bad_label_is_refused_with_a_readable_message_and_nothing_stored(photo, owner, label):
    with pytest.raises(ValidationError, match="Choose a species from the catalogue"):
        services.suggestion_create(photo=photo, user=owner, label=label)
    assert not UserSuggestion.objects.exists()


def test_only_the_owner_may_suggest(photo):
    with pytest.raises(ValidationError, match="owner"):
        services.suggestion_create(photo=photo, user=UserFactory(), label="monarch")


def test_the_owner_sees_the_staff_decision_made_after_the_suggestion(photo, owner):
    services.suggestion_create(photo=photo, user=owner, label="viceroy")
    [waiting] = selectors.suggestion_history_for_photo(photo)
    assert waiting.name == "Viceroy" and waiting.decision == ""
    LabelCorrectionFactory(photo=photo, old_label="", new_label="monarch")
    Photo.objects.filter(pk=photo.pk).update(label="monarch")
    [decided] = selectors.suggestion_history_for_photo(photo)
    assert decided.decision == "monarch" and decided.decision_name == "Monarch"


def test_api_suggestion_201_400_404(photo, owner, api_for):
    api = api_for(owner)
    url = reverse("classifier_api:photo_suggestion", args=[photo.pk])
    response = api.post(url, {"label": "viceroy"}, format="json")
    assert response.status_code == 201
    assert response.json()["label"] == "viceroy" and response.json()["name"] == "Viceroy"
    bad = api.post(url, {"label": "unicorn"}, format="json")
    assert bad.status_code == 400 and "Choose a species from the catalogue" in bad.json()["detail"]
    assert api.post(url, {}, format="json").status_code == 400
    stranger = api_for(UserFactory())
    assert stranger.post(url, {"label": "viceroy"}, format="json").status_code == 404
    assert UserSuggestion.objects.count() == 1


def test_api_needs_authentication(photo):
    from rest_framework.test import APIClient

    response = APIClient().post(reverse("classifier_api:photo_suggestion", args=[photo.pk]), {"label": "monarch"}, format="json")
    assert response.status_code == 401
    assert not UserSuggestion.objects.exists()


def test_page_form_stores_the_suggestion_and_says_so(client, photo, owner):
    client.force_login(owner)
    url = reverse("classifier:photo_suggestion", args=[photo.pk])
    response = client.post(url, {"label": "peacock"}, follow=True)
    assert response.status_code == 200 and "Staff will look at this photo" in response.content.decode()
    response = client.post(url, {"label": "nonsense"}, follow=True)
    assert "Choose a species from the catalogue" in response.content.decode()
    other = PhotoFactory()
    assert client.post(reverse("classifier:photo_suggestion", args=[other.pk]), {"label": "monarch"}).status_code == 404
    assert list(UserSuggestion.objects.values_list("label", flat=True)) == ["peacock"]


def test_admin_lists_and_filters_suggestions_read_only(client, photo, owner):
    staff = UserFactory(is_staff=True, is_superuser=True)
    services.suggestion_create(photo=photo, user=owner, label="viceroy")
    decided = PhotoFactory(owner=owner, label="monarch")
    services.suggestion_create(photo=decided, user=owner, label="not a butterfly")
    client.force_login(staff)
    url = reverse("admin:suggestions_usersuggestion_changelist")
    page = client.get(url).content.decode()
    assert "Viceroy" in page and "Not a butterfly" in page
    waiting = client.get(url + "?decided=no").content.decode()
    assert "Viceroy" in waiting and f"Photo {decided.pk} " not in waiting
    by_label = client.get(url + "?label=not+a+butterfly").content.decode()
    assert f"Photo {decided.pk} " in by_label and f"Photo {photo.pk} " not in by_label
    assert client.get(reverse("admin:suggestions_usersuggestion_add")).status_code == 403

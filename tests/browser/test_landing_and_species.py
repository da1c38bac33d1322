"""Issue 12 in a real browser: the signed-out landing page, the species list and a species page,
sign-in and sign-up; axe-core finds no serious or critical violation on any of them, desktop or phone."""

import re

import pytest

from ml import species as catalogue
from tests.browser.conftest import axe_serious, wait_for_images_loaded
from tests.classifier.factories import PhotoFactory, UserFactory

pytestmark = [pytest.mark.browser]


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_landing_says_what_the_site_does_and_links_to_sign_up_and_species(page, live_server, axe_source, screenshot):
    page.goto(live_server.url + "/")
    assert "Which butterfly is it?" in page.locator("h1").inner_text()
    assert "49 species" in page.locator(".lead").inner_text()
    featured = page.locator("#featured-species [data-species-key]")
    assert featured.count() >= 4
    assert featured.first.locator("img").get_attribute("alt")  # names the species
    assert page.locator("#landing-signup").get_attribute("href") == "/accounts/signup/"
    assert axe_serious(page, axe_source) == []
    screenshot("landing")
    page.click("#landing-species")
    page.wait_for_url(re.compile(r"/species/$"))


def test_landing_fits_one_phone_screen(phone_page, live_server, axe_source, screenshot):
    phone_page.goto(live_server.url + "/")
    # What the site does and the two ways in are on the first screen, without scrolling.
    for selector in ("h1", ".lead", "#landing-signup", "#landing-species"):
        box = phone_page.locator(selector).bounding_box()
        assert box["y"] + box["height"] <= 844, selector
    assert axe_serious(phone_page, axe_source) == []
    screenshot("landing-phone", on=phone_page)


def test_species_list_and_page_on_a_phone(phone_page, live_server, axe_source, screenshot):
    phone_page.goto(live_server.url + "/species/")
    columns = phone_page.evaluate("getComputedStyle(document.getElementById('species-list')).gridTemplateColumns.split(' ').length")
    assert columns >= 2 and phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    assert axe_serious(phone_page, axe_source) == []
    screenshot("species-list-phone", on=phone_page, full_page=False)  # the first screen of 49
    phone_page.goto(live_server.url + "/species/viceroy/")
    assert axe_serious(phone_page, axe_source) == []
    screenshot("species-page-phone", on=phone_page)


def test_species_list_shows_every_species_with_photo_name_and_scientific_name(page, live_server, axe_source, screenshot):
    page.goto(live_server.url + "/species/")
    cards = page.locator("#species-list [data-species-key]")
    assert cards.count() == len(catalogue.all()) == 49
    monarch = page.locator('#species-list [data-species-key="monarch"]')
    assert monarch.locator(".species-name").inner_text() == "Monarch"
    assert monarch.locator(".scientific").inner_text() == "Danaus plexippus"
    # Every reference photo loads (static files shipped in the repository).
    page.wait_for_load_state("load")
    broken = page.locator("#species-list img").evaluate_all(
        "imgs => imgs.filter(i => { i.loading = 'eager'; return i.complete && i.naturalWidth === 0; }).length")
    assert broken == 0
    assert axe_serious(page, axe_source) == []
    screenshot("species-list", full_page=False)  # the first screen of 49
    monarch.locator("a").click()
    page.wait_for_url(re.compile(r"/species/monarch/$"))


def test_species_page_shows_reference_photos_note_and_the_users_own_photos(page, live_server, axe_source, screenshot, sign_in_as):
    owner, stranger = UserFactory(), UserFactory()
    mine = PhotoFactory(owner=owner, label="monarch")  # a staff label is the answer
    PhotoFactory(owner=owner, label="viceroy")
    theirs = PhotoFactory(owner=stranger, label="monarch")
    monarch = catalogue.get("monarch")

    page.goto(live_server.url + f"/species/{monarch.slug}/")
    assert page.locator("#scientific-name").inner_text() == "Danaus plexippus"
    assert monarch.note in page.locator("#field-note").inner_text()
    images = page.locator("#reference-photos img")
    assert images.count() == 3
    wait_for_images_loaded(images)
    assert "Sign in" in page.locator("#your-photos").inner_text()  # signed out: no one's photos

    sign_in_as(page, owner)
    page.reload()
    shown = page.locator("#your-photos [data-photo-id]").evaluate_all("els => els.map(e => Number(e.dataset.photoId))")
    assert shown == [mine.pk] and theirs.pk not in shown
    assert "Monarch" in page.locator("#your-photos img").first.get_attribute("alt")
    assert axe_serious(page, axe_source) == []
    screenshot("species-page")
    assert page.goto(live_server.url + "/species/no-such-butterfly/").status == 404


@pytest.mark.parametrize("path, name", [("/accounts/login/", "sign-in"), ("/accounts/signup/", "sign-up")])
def test_sign_in_and_sign_up_pass_axe_on_desktop_and_phone(page, phone_page, live_server, axe_source, path, name, screenshot):
    for viewer in (page, phone_page):
        viewer.goto(live_server.url + path)
        assert axe_serious(viewer, axe_source) == []
    screenshot(name, on=page)
    screenshot(f"{name}-phone", on=phone_page)

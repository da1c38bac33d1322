"""Playwright driving Debian's Chromium against pytest-django's live server."""

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between
# browser steps are ordinary synchronous calls, which Django would otherwise refuse.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-dev.txt")
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium; scripts/test does it as root)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot(request, tmp_path):
    """Save a (full-page unless told) screenshot of `on` (the desktop `page` unless given, e.g. phone_page);
    SCREENSHOT_DIR=docs/screenshots refreshes the ones in the docs."""
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)

    def take(name, on=None, full_page=True):
        folder.mkdir(parents=True, exist_ok=True)
        (on or request.getfixturevalue("page")).screenshot(path=str(folder / f"{name}.png"), full_page=full_page)

    return take


AXE_JS = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone_page(browser):
    """A 390x844 phone viewport with touch, as an iPhone 12-14 shows a page."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def axe_source():
    if not AXE_JS.exists():
        pytest.skip(f"needs axe-core at {AXE_JS} (npm ci; scripts/test runs it when node is installed)")
    return AXE_JS.read_text(encoding="utf-8")


def axe_serious(page, axe_source):
    """axe-core's serious and critical violations on the page as it is now, as readable lines.

    Injected through the DevTools protocol (page.evaluate), which the site's Content-Security-Policy
    (scripts from 'self' only) does not apply to; the page itself stays under that policy."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source + "\n;0")  # a script, not a function: evaluated as it stands
    violations = page.evaluate(
        """async () => {
            const result = await window.axe.run(document, {resultTypes: ['violations']});
            return result.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
        }"""
    )
    return [f"{v['impact']} {v['id']} ({v['help']}): " + " | ".join(v["nodes"]) for v in violations]


@pytest.fixture
def sign_in_as(live_server):
    """Put `user`'s session cookie into the page's browser context (no sign-in form, no rate limit)."""
    from django.conf import settings
    from django.test import Client

    def sign_in(page, user):
        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value,
                                   "url": live_server.url}])

    return sign_in


def wait_for_images_loaded(images, timeout: float = 15_000) -> None:
    """Waits until every <img> of the locator has loaded with pixels. Not page.wait_for_function:
    its predicate is evaluated from a string, which the site's Content-Security-Policy forbids."""
    from playwright.sync_api import expect

    for image in images.all():
        expect(image).to_have_js_property("complete", True, timeout=timeout)
        assert image.evaluate("i => i.naturalWidth") > 0, image.get_attribute("src")


@pytest.fixture
def photo_of(request):
    """A finished photo of `owner` made from a real photo of `folder` (butterflies50/test/<folder>, or
    any path under ../shared/data) when the team's data is here, so screenshots show real photos,
    a plain generated JPEG otherwise (these tests check the pages, not the models); "skimage:chelsea"
    takes one of scikit-image's photos (a cat)."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from classifier import images
    from classifier.models import unguessable_name
    from tests.classifier.factories import PhotoFactory
    from tests.classifier.images import image_bytes
    from tests.conftest import SHARED_DIR

    def skimage_photo(name):  # real photos that are not butterflies, shipped inside scikit-image
        import io

        import skimage.data
        from PIL import Image

        out = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(out, "JPEG", quality=88)
        return out.getvalue()

    def make(owner, folder=None, **fields):
        if folder and folder.startswith("skimage:"):
            content = skimage_photo(folder.split(":", 1)[1])
        else:
            found = sorted((SHARED_DIR / "data" / "butterflies50" / "test" / folder).glob("*.jpg"))[:1] if folder else []
            if folder and not found:
                found = sorted((SHARED_DIR / "data" / folder).glob("*.jpg"))[:1]
            content = found[0].read_bytes() if found else image_bytes(size=(320, 240))
        names = {kind: default_storage.save(unguessable_name(kind, "jpg"), ContentFile(data)) for kind, data in (
            ("originals", content), ("display", images.reencode(content, images.DISPLAY_MAX_SIDE)),
            ("thumbnails", images.reencode(content, images.THUMBNAIL_MAX_SIDE)))}
        checked = images.check_image(content, max_pixels=10**8)
        return PhotoFactory(owner=owner, original=names["originals"], display=names["display"],
                            thumbnail=names["thumbnails"], size_bytes=len(content), width=checked.width,
                            height=checked.height, image_format=checked.image_format, **fields)

    return make

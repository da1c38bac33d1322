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
    """Save a full-page screenshot of `on` (the desktop `page` unless given, e.g. phone_page);
    SCREENSHOT_DIR=docs/screenshots refreshes the ones in the docs."""
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path)

    def take(name, on=None):
        folder.mkdir(parents=True, exist_ok=True)
        (on or request.getfixturevalue("page")).screenshot(path=str(folder / f"{name}.png"), full_page=True)

    return take


AXE_JS = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def phone_page(browser):
    """A 390x844 phone viewport with touch, as an iPhone 12-14 shows a page."""
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
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

"""/docs with no internet: the real `samfast serve` on loopback, Debian's headless Chromium with every
name but 127.0.0.1 unresolvable and every proxied request sent to a dead port, and each request the
page makes recorded from Chrome's DevTools log. The page must render Swagger UI from the files the
package ships, and no request may go anywhere but 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from urllib.parse import urlsplit

import httpx
import pytest
from serve_fixtures import serve_process

KEY = "docs-key-0123456789abcdef"
H = {"X-API-Key": KEY}
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ASSETS = "/static/swagger-ui"
# Checked before the server starts, so a machine without them skips at once.
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER and importlib.util.find_spec("selenium")),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver) "
    "and selenium (the dev extra)",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_process(tmp_path_factory.mktemp("docs"), KEY) as served:
        yield served["url"]


def test_swagger_files_are_served_without_the_key_cached_and_outside_the_spec(server):
    for name, kind in (("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui.css", "text/css")):
        reply = httpx.get(f"{server}{ASSETS}/{name}")
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith(kind)
        assert "max-age" in reply.headers["cache-control"]
        assert len(reply.content) > 100_000  # the real bundle, not a stub
    licence = httpx.get(f"{server}{ASSETS}/LICENSE")
    assert licence.status_code == 200 and "Apache License" in licence.text
    assert httpx.head(f"{server}{ASSETS}/swagger-ui.css").status_code == 200
    # Only the listed files are open: anything else under the prefix still needs the key.
    assert httpx.get(f"{server}{ASSETS}/README.md").status_code == 401
    assert httpx.get(f"{server}{ASSETS}/README.md", headers=H).status_code == 404
    page = httpx.get(f"{server}/docs").text
    assert "cdn." not in page and "https://" not in page
    spec = httpx.get(f"{server}/openapi.json", headers=H).json()
    assert not [path for path in spec["paths"] if path.startswith("/static")]


def _operations(spec: dict) -> int:
    verbs = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return sum(1 for item in spec["paths"].values() for verb in item if verb in verbs)


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-dev-shm-usage",
        # Networking off but for loopback: no other name resolves, and whatever is proxied hits
        # the discard port. Chromium's own background traffic is cut as well.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # An explicit driver: Selenium Manager would otherwise try to download one.
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def _requests(driver) -> list[str]:
    """The URLs of every request the page has made since the last call (DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        elif message["method"] == "Network.webSocketCreated":
            urls.append(message["params"]["url"])
    return urls


def _away(urls: list[str]) -> list[str]:
    """Requests for anywhere but 127.0.0.1 (data: URLs, the stylesheet's inline icons, stay in the page)."""
    return [
        u for u in urls if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname != "127.0.0.1"
    ]


@needs_chromium
def test_docs_render_in_headless_chromium_with_networking_off(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    spec = httpx.get(f"{server}/openapi.json", headers=H).json()
    driver = _browser()
    seen: list[str] = []
    try:
        driver.get(f"{server}/docs")
        seen += _requests(driver)
        assert not _away(seen), f"requests that left 127.0.0.1: {_away(seen)}"
        assert driver.title == "samfast API"
        assert driver.execute_script("return typeof SwaggerUIBundle") == "function"

        # A wrong key: the page says why, and renders nothing.
        driver.find_element(By.ID, "value").send_keys("wrong")
        driver.find_element(By.CSS_SELECTOR, "#key button").click()
        alert = WebDriverWait(driver, 30).until(expected_conditions.alert_is_present())
        assert "API key" in alert.text
        alert.accept()
        assert not driver.find_elements(By.CSS_SELECTOR, ".opblock")

        field = driver.find_element(By.ID, "value")
        field.clear()
        field.send_keys(KEY)
        driver.find_element(By.CSS_SELECTOR, "#key button").click()
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) == _operations(spec))
        title = driver.find_element(By.CSS_SELECTOR, ".information-container .title").text
        assert title.startswith("samfast")
        # Pre-authorized with the key, so "Try it out" sends it: Swagger UI locks the Authorize button.
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".btn.authorize.locked"))
        styled = driver.execute_script(
            "return getComputedStyle(document.querySelector('.swagger-ui .opblock')).borderStyle"
        )
        assert styled == "solid"  # swagger-ui.css loaded, not just the script
        seen += _requests(driver)
    finally:
        driver.quit()

    assert any(url.endswith(f"{ASSETS}/swagger-ui-bundle.js") for url in seen), seen
    assert any(url.endswith(f"{ASSETS}/swagger-ui.css") for url in seen), seen
    assert not _away(seen), f"requests that left 127.0.0.1: {_away(seen)}"

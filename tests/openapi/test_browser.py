"""/docs and /redoc in headless Chromium, from a real uvicorn process: the operations render,
and the browser asks nothing of any host but the gateway's 127.0.0.1."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from tests.openapi import browser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium():
    reason = browser.missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide the browser (.ci/run installs it): {reason}")
        pytest.skip(reason)
    with browser.chromium() as driver:
        yield driver


def assert_only_local(urls: list[str], port: int) -> None:
    """Every network request went to the gateway (chrome://, data: and blob: are in-browser)."""
    network = [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss", "ftp")]
    assert network, "no request recorded"
    strays = [u for u in network if (urlsplit(u).hostname, urlsplit(u).port) != ("127.0.0.1", port)]
    assert strays == []


def wait_for(driver, css: str, timeout: float = 30) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, css) or False)


def test_swagger_ui_renders_the_operations_offline(chromium, served):
    from selenium.webdriver.common.by import By

    browser.requested_urls(chromium)  # forget the browser's own start-up requests
    chromium.get(served.url + "/docs")
    tags = wait_for(chromium, ".opblock-tag")
    names = {t.get_attribute("data-tag") for t in tags}
    assert {"Contact", "Email", "APIv4", "APIv3"} <= names
    chromium.find_element(By.ID, "operations-tag-Contact").click()
    create = wait_for(chromium, "#operations-Contact-Contact_create")[0]
    assert "/v4/Contact/create" in create.text
    paths = [e.text for e in chromium.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert {"/v4/Contact/get", "/v4/Contact/update", "/v4/Contact/delete"} <= set(paths)
    create.find_element(By.CSS_SELECTOR, ".opblock-summary").click()  # open it: schema, examples
    wait_for(chromium, "#operations-Contact-Contact_create .opblock-body select, "
                       "#operations-Contact-Contact_create .examples-select")
    assert_only_local(browser.requested_urls(chromium), served.port)
    assert [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"] == []


def test_redoc_renders_offline(chromium, served):
    browser.requested_urls(chromium)
    chromium.get(served.url + "/redoc")
    wait_for(chromium, "[data-section-id='tag/Contact']", timeout=60)
    section = wait_for(chromium, "[data-section-id='tag/Contact/operation/Contact_create']")[0]
    assert "/v4/Contact/create" in section.get_attribute("textContent")
    assert_only_local(browser.requested_urls(chromium), served.port)
    assert [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"] == []

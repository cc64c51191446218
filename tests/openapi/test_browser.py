"""/docs and /redoc in headless Chromium, from real uvicorn processes: the operations render,
the browser asks nothing of any host but the gateway's 127.0.0.1, a reader sees what its token
allows, and a site with 150 entities opens on one entity's document, not on all of them."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.conftest import GatewayProcess
from tests.openapi import browser
from tests.openapi.bigsite import write_big_spec
from tests.openapi.conftest import CLIENT_TOKEN

pytestmark = pytest.mark.slow
TOKEN_KEY = "civicrm-gateway-token"


@pytest.fixture(scope="module")
def big_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, list[str]]]:
    """A tokenless gateway documenting 150 entities (a spec file), built at start-up."""
    folder = tmp_path_factory.mktemp("big-site")
    names = write_big_spec(folder / "spec.json", 150)
    proc = GatewayProcess(
        {
            "CIVI_GATEWAY_BACKEND": "sandbox",
            "CIVI_GATEWAY_SANDBOX_DEMO": "0",
            "CIVI_GATEWAY_OPENAPI_SPEC_FILE": str(folder / "spec.json"),
            "CIVI_GATEWAY_OPENAPI_PREBUILD": "true",
        },
        folder,
    )
    try:
        yield proc.wait_ready(), names
    finally:
        proc.stop()


def assert_only_local(urls: list[str], port: int) -> None:
    """Every network request went to the gateway (chrome://, data: and blob: are in-browser)."""
    network = [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss", "ftp")]
    assert network, "no request recorded"
    strays = [u for u in network if (urlsplit(u).hostname, urlsplit(u).port) != ("127.0.0.1", port)]
    assert strays == []


def wait_for(driver, css: str, timeout: float = 30) -> list:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.find_elements(By.CSS_SELECTOR, css) or False)


def with_token(driver, url: str, token: str | None) -> None:
    """Open ``url`` as a reader who gave ``token`` to Authorize (kept for the tab): the
    token is put in the tab's storage from another page of the same origin."""
    parts = urlsplit(url)
    driver.get(f"{parts.scheme}://{parts.netloc}/healthz")
    if token:
        driver.execute_script("sessionStorage.setItem(arguments[0], arguments[1])", TOKEN_KEY, token)
    else:
        driver.execute_script("sessionStorage.removeItem(arguments[0])", TOKEN_KEY)
    driver.get_log("browser")  # forget that page's own requests and messages (its favicon)
    browser.requested_urls(driver)
    driver.get(url)


def test_swagger_ui_renders_the_readers_documents_offline(chromium, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with_token(chromium, served.url + "/docs", CLIENT_TOKEN)
    # Contact's document first, its operations listed
    create = wait_for(chromium, "#operations-Contact-Contact_create")[0]
    assert "/v4/Contact/create" in create.text
    paths = [e.text for e in chromium.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert {"/v4/Contact/get", "/v4/Contact/update", "/v4/Contact/delete"} <= set(paths)
    assert not [p for p in paths if not p.startswith("/v4/Contact/")]
    create.find_element(By.CSS_SELECTOR, ".opblock-summary").click()  # open it: schema, examples
    wait_for(
        chromium,
        "#operations-Contact-Contact_create .opblock-body select, "
        "#operations-Contact-Contact_create .examples-select",
    )
    # another entity from the selector
    documents = Select(chromium.find_element(By.ID, "cgw-document"))
    names = [o.text for o in documents.options]
    assert {"Contact", "Email", "Activity"} <= set(names)
    documents.select_by_visible_text("Email")
    assert "/v4/Email/create" in wait_for(chromium, "#operations-Email-Email_create")[0].text
    requested = browser.requested_urls(chromium)
    assert_only_local(requested, served.port)
    assert not [u for u in requested if urlsplit(u).path == "/openapi.json"]
    assert [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"] == []


def test_without_a_token_the_page_shows_the_generic_routes(chromium, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with_token(chromium, served.url + "/docs", None)
    wait_for(chromium, "#operations-APIv4-v4_call")
    tags = {t.get_attribute("data-tag") for t in chromium.find_elements(By.CSS_SELECTOR, ".opblock-tag")}
    assert tags == {"APIv4", "APIv3", "service"}
    options = [o.text for o in Select(chromium.find_element(By.ID, "cgw-document")).options]
    assert "Contact" not in options

    # Authorize with the client token: the page starts again on that client's documents
    chromium.find_element(By.CSS_SELECTOR, ".btn.authorize").click()
    field = wait_for(chromium, ".auth-container input")[0]
    field.send_keys(CLIENT_TOKEN)
    chromium.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .btn.authorize").click()
    wait_for(chromium, "#operations-Contact-Contact_create")
    assert chromium.execute_script("return sessionStorage.getItem(arguments[0])", TOKEN_KEY) == CLIENT_TOKEN


def test_redoc_renders_offline(chromium, served):
    with_token(chromium, served.url + "/redoc", CLIENT_TOKEN)
    wait_for(chromium, "[data-section-id='tag/Contact']", timeout=60)
    section = wait_for(chromium, "[data-section-id='tag/Contact/operation/Contact_create']")[0]
    assert "/v4/Contact/create" in section.get_attribute("textContent")
    assert_only_local(browser.requested_urls(chromium), served.port)
    assert [e for e in chromium.get_log("browser") if e["level"] == "SEVERE"] == []


def test_a_site_with_150_entities_opens_on_one_entity(chromium, big_site):
    """What keeps the first render short: the page fetches the entity index and the first
    entity's document, never the whole site's (benchmarks/bench_docs.py times it)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    served, names = big_site
    with_token(chromium, served.url + "/docs", None)
    wait_for(chromium, "#operations-Contact-Contact_create", timeout=60)
    options = Select(chromium.find_element(By.ID, "cgw-document")).options
    assert [o.text for o in options][:150] == names
    documents = [
        urlsplit(u).path for u in browser.requested_urls(chromium) if urlsplit(u).path.startswith("/openapi")
    ]
    assert documents == ["/openapi/index.json", "/openapi/Contact.json"]
    assert len(chromium.find_elements(By.CSS_SELECTOR, ".opblock")) < 20


def test_redoc_on_a_site_with_150_entities_opens_on_one_entity(chromium, big_site):
    """/redoc, like /docs, renders one entity's document; another is chosen from the selector
    or with ?entity=Name (benchmarks/bench_docs.py times the first render)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    served, names = big_site
    with_token(chromium, served.url + "/redoc", None)
    wait_for(chromium, "[data-section-id='tag/Contact/operation/Contact_create']", timeout=60)
    documents = [
        urlsplit(u).path for u in browser.requested_urls(chromium) if urlsplit(u).path.startswith("/openapi")
    ]
    assert documents == ["/openapi/index.json", "/openapi/Contact.json"]
    options = Select(chromium.find_element(By.ID, "cgw-document")).options
    assert [o.text for o in options][:150] == names
    Select(chromium.find_element(By.ID, "cgw-document")).select_by_visible_text("Email")
    wait_for(chromium, "[data-section-id='tag/Email/operation/Email_create']", timeout=60)
    assert chromium.find_elements(By.CSS_SELECTOR, "[data-section-id='tag/Contact']") == []
    chromium.get(served.url + "/redoc?entity=Activity")
    wait_for(chromium, "[data-section-id='tag/Activity/operation/Activity_create']", timeout=60)

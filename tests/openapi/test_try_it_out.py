"""/docs' Try-it-out, pressed in headless Chromium against real uvicorn processes: on a
tokenless gateway (the page is the gateway's own origin, so its calls pass the browser checks;
no Authorize button, no padlocks) and on a gateway with client tokens (Authorize with a client
token, then Execute). Each time the answer shown is a 200 with the demo records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayProcess
from tests.openapi.conftest import CLIENT_TOKEN
from tests.openapi.test_browser import wait_for, with_token

pytestmark = pytest.mark.slow
GET = "#operations-Contact-Contact_get"


@pytest.fixture(scope="module")
def tokenless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The first command's gateway: tokenless, on the sandbox with its demo contacts."""
    proc = GatewayProcess({"CIVI_GATEWAY_BACKEND": "sandbox"}, tmp_path_factory.mktemp("tokenless"))
    try:
        yield proc.wait_ready()
    finally:
        proc.stop()


def execute(driver: Any, operation: str) -> tuple[str, Any]:
    """Open an operation, press "Try it out" then "Execute" with its example; the status and
    the JSON body Swagger UI shows for the live answer."""
    from selenium.webdriver.common.by import By

    block = wait_for(driver, operation)[0]
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(driver, f"{operation} .try-out__btn")[0].click()
    wait_for(driver, f"{operation} .btn.execute")[0].click()
    status = wait_for(driver, f"{operation} .live-responses-table tr.response .response-col_status")[0].text
    body = wait_for(driver, f"{operation} .live-responses-table .response-col_description pre")[0]
    return status.strip(), json.loads(body.get_attribute("textContent"))


def test_execute_on_a_tokenless_gateway(chromium, tokenless):
    from selenium.webdriver.common.by import By

    with_token(chromium, tokenless.url + "/docs", None)
    wait_for(chromium, GET)
    # nothing to authorize: no button, no padlock
    assert chromium.find_elements(By.CSS_SELECTOR, ".btn.authorize") == []
    assert chromium.find_elements(By.CSS_SELECTOR, ".authorization__btn") == []
    status, records = execute(chromium, GET)
    assert status == "200", records
    assert isinstance(records, list) and records, records
    assert all(isinstance(r, dict) and "id" in r for r in records)


def test_authorize_then_execute_on_a_gateway_with_tokens(chromium, served):
    from selenium.webdriver.common.by import By

    with_token(chromium, served.url + "/docs", None)
    wait_for(chromium, "#operations-APIv4-v4_call")
    assert chromium.find_elements(By.CSS_SELECTOR, ".authorization__btn")  # padlocks
    chromium.find_element(By.CSS_SELECTOR, ".btn.authorize").click()
    wait_for(chromium, ".auth-container input")[0].send_keys(CLIENT_TOKEN)
    chromium.find_element(By.CSS_SELECTOR, ".auth-btn-wrapper .btn.authorize").click()
    status, records = execute(chromium, GET)
    assert status == "200", records
    assert isinstance(records, list) and records, records
    assert all(isinstance(r, dict) and "id" in r for r in records)

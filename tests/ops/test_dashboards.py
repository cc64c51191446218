"""The Grafana dashboard (deploy/grafana/) and the Prometheus alert rules (deploy/prometheus/)
are well formed, their PromQL parses, and every metric, label and label value they select is one
a live gateway really exports: the names come from /metrics after traffic that makes every metric
appear (HTTP backend with an upstream that fails, and the cv pipe backend), not from a list.

promtool is not used: Debian ships it only inside the whole Prometheus server package (about
100 MB installed). The PromQL parser here is the promql-parser package (test extra)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import promql_parser as pq
import pytest
import yaml

from tests.conftest import ROOT, gateway_client, http_settings
from tests.cv.conftest import Site, cv_settings
from tests.ops.conftest import samples

pytestmark = pytest.mark.slow

DASHBOARD = ROOT / "deploy" / "grafana" / "civicrm-gateway.json"
RULES = ROOT / "deploy" / "prometheus" / "civicrm-gateway-alerts.yaml"
# Labels Prometheus adds to every scraped series; the gateway does not export them.
TARGET_LABELS = frozenset({"job", "instance"})
# What Grafana puts in place of its variables before the query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "6h",
    "$job": ".*",
    "$backend": ".*",
}

Exported = dict[str, dict[str, set[str]]]  # sample name -> label -> values seen


def record(exported: Exported, text: str) -> None:
    for sample in samples(text):
        labels = exported.setdefault(sample.name, {})
        for name, value in sample.labels.items():
            labels.setdefault(name, set()).add(value)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """/metrics of live gateways after traffic that touches every metric."""
    import asyncio

    return asyncio.run(_collect(tmp_path_factory.mktemp("exported")))


async def _collect(tmp: Path) -> Exported:
    from gateway.sandbox.engine import Sandbox
    from gateway.sandbox.wire import WireConfig, create_wire_app
    from tests.conftest import ADMIN_KEY, SITE_KEY, ThreadServer

    exported: Exported = defaultdict(dict)
    sandbox = Sandbox(":memory:", demo=3)
    server = ThreadServer(
        create_wire_app(sandbox, WireConfig(api_keys={ADMIN_KEY: 2}, site_key=SITE_KEY))
    ).start()
    settings = http_settings(
        server.url,
        default_rate_limit="40/minute",
        retry_max_attempts=2,
        retry_backoff=0.001,
        breaker_threshold=3,
        breaker_cooldown=600,
    )
    try:
        async with gateway_client(settings) as gw:
            assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 200
            for _ in range(2):  # a metadata cache miss, then a hit
                assert (await gw.post("/v4/Contact/getFields", json={})).status_code == 200
            batch = await gw.post("/v4/batch", json={"a": ["Contact", "get", {"limit": 1}]})
            assert batch.status_code == 200
            export = await gw.get("/v4/Contact/get", params={"format": "ndjson"})
            assert export.status_code == 200
            assert (await gw.get("/readyz")).status_code == 200
            assert (await gw.get("/nope")).status_code == 404
            # the change feed: started, then a contact created, then polled (its lag)
            start = await gw.post("/v4/Contact/changes", json={})
            assert start.status_code == 200, start.text
            made = await gw.post(
                "/v4/Contact/create", json={"values": {"first_name": "Lag", "contact_type": "Individual"}}
            )
            assert made.status_code == 200, made.text
            polled = await gw.post("/v4/Contact/changes", json={"cursor": start.headers["X-Next-Cursor"]})
            assert polled.status_code == 200 and polled.json(), polled.text
            server.stop()  # CiviCRM goes away: retries, then the breaker opens and rejects
            statuses = [
                (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code for _ in range(3)
            ]
            assert statuses == [503, 503, 503]
            while (await gw.post("/v4/Contact/get", json={})).status_code != 429:
                pass  # up to the rate limit: refusals counted
            assert (await gw.get("/readyz")).status_code == 200
            record(exported, (await gw.get("/metrics")).text)
    finally:
        server.stop()
        sandbox.close()
    site = Site(tmp / "site")
    site.dir.mkdir()
    Sandbox(str(site.db)).close()
    async with gateway_client(cv_settings(site, "pipe")) as gw:
        assert (await gw.get("/v4/Contact/get", params={"limit": "1"})).status_code == 200
        record(exported, (await gw.get("/metrics")).text)
    return dict(exported)


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def check_expression(expr: str, exported: Exported) -> list[str]:
    """Parse ``expr`` and check each selector against what the gateway exports; returns the
    metric names it selects."""
    tree = pq.parse(expr)
    selected: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, pq.VectorSelector):
            assert node.name in exported, f"{node.name} is not exported ({expr})"
            labels = exported[node.name]
            for matcher in node.matchers.matchers:
                where = f"{node.name}{{{matcher.name}...}} in {expr}"
                if matcher.name in TARGET_LABELS:
                    continue
                assert matcher.name in labels, f"no label {where}"
                seen = labels[matcher.name]
                if matcher.op == pq.MatchOp.Equal:
                    assert matcher.value in seen, f"value {matcher.value!r} never seen: {where}"
                elif matcher.op == pq.MatchOp.Re:
                    pattern = re.compile(matcher.value)
                    assert any(pattern.fullmatch(v) for v in seen), f"matches nothing: {where}"
            selected.append(node.name)
        elif isinstance(node, pq.AggregateExpr) and node.modifier is not None:
            inner: list[str] = []
            pq.walk(
                node.expr,
                pre_visit=lambda n: inner.append(n.name) if isinstance(n, pq.VectorSelector) else None,
            )
            for label in node.modifier.labels:
                assert label in TARGET_LABELS or any(label in exported.get(m, {}) for m in inner), (
                    f"no metric of {inner} has label {label!r} ({expr})"
                )

    pq.walk(tree, pre_visit=visit)
    assert selected, f"selects no metric: {expr}"
    return selected


def test_the_traffic_made_every_gateway_metric_appear(exported):
    """The collection above is only as good as its traffic: every gateway_ family has samples."""
    from gateway.telemetry.metrics import Metrics

    suffix = {"counter": "_total", "histogram": "_bucket", "gauge": ""}
    families = {m.name + suffix[m.type] for m in Metrics().registry.collect()}
    assert families - set(exported) == set()


def test_alert_rules_are_valid_and_name_exported_metrics(exported):
    rules = yaml.safe_load(RULES.read_text())
    [group] = rules["groups"]
    assert group["name"] == "civicrm-gateway"
    alerts = {}
    for rule in group["rules"]:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        alerts[rule["alert"]] = check_expression(rule["expr"], exported)
    assert alerts == {
        "CiviGatewayBreakerOpen": ["gateway_breaker_state"],
        "CiviGatewayCiviCRMDown": ["gateway_upstream_up"],
        "CiviGatewayHigh5xxRatio": ["gateway_requests_total", "gateway_requests_total"],
        "CiviGatewayUpstreamSlow": ["gateway_upstream_duration_seconds_bucket"],
        "CiviGatewayPipeWorkersRestarting": ["gateway_backend_pool"],
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_dashboard_is_valid_and_names_exported_metrics(exported):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "civicrm-gateway"
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "backend"):
        query = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables[name]["definition"])
        assert query, variables[name]
        metric, label = query.groups()
        assert label in TARGET_LABELS or label in exported[metric]

    all_panels = panels(dashboard)
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    selected: set[str] = set()
    cells: set[tuple[int, int]] = set()
    for panel in all_panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):  # panels do not overlap
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            selected.update(check_expression(substitute(target["expr"]), exported))
    # What the issue asks to see: requests by route and status, latency, upstream latency,
    # retries, breaker state, pool use, cache hits, rate-limit refusals.
    assert {
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_duration_seconds_bucket",
        "gateway_upstream_retries_total",
        "gateway_breaker_state",
        "gateway_backend_pool",
        "gateway_metadata_cache_total",
        "gateway_rate_limited_total",
    } <= selected

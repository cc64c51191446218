"""Code samples (``x-codeSamples``, which ReDoc shows beside each operation) and the example
values the document uses.

Examples come from the sandbox's demo data (:mod:`gateway.sandbox.demo`), so that Try-it-out
against a gateway on the sandbox finds records. The samples name the gateway by
:data:`BASE_URL`, a placeholder that the served document replaces with the request's own base
URL (see :mod:`gateway.web.openapi`), so what a reader copies works as is.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from gateway.sandbox import demo

# Replaced in the served document by the base URL the request came to.
BASE_URL = "http://civicrm-gateway.invalid"
TOKEN_VARIABLE = "CIVI_GATEWAY_TOKEN"  # noqa: S105 (a variable name, not a secret)

# A filter that finds records on the sandbox's demo data: a last name it always generates.
SAMPLE_FILTER = {"field": "last_name", "value": demo.LAST[0]}
SAMPLE_VALUES: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "display_name": "Ada Lovelace",
    "sort_name": "Lovelace, Ada",
    "organization_name": demo.ORGS[0],
    "household_name": "Lovelace Household",
    "email": "ada@example.org",
    "phone": "555-0100",
    "subject": "Phone call",
    "street_address": "1 Main St",
    "city": demo.CITIES[0],
    "postal_code": "10001",
    "total_amount": 25.0,
    "title": demo.GROUPS[1],
    "name": demo.GROUPS[1].replace(" ", "_"),
    "note": "Met at the fair.",
}
# What a get example filters on, by field: values that demo records hold.
FIND_VALUES: dict[str, Any] = {
    "last_name": demo.LAST[0],
    "first_name": demo.FIRST[0],
    "city": demo.CITIES[0],
    "title": demo.GROUPS[1],
    "name": demo.GROUPS[1].replace(" ", "_"),
}


def _js(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _python(value: Any) -> str:
    """A Python literal of JSON data (true/false/null spelled the Python way)."""
    text = json.dumps(value, indent=4, ensure_ascii=False)
    return (
        text.replace(": true", ": True")
        .replace(": false", ": False")
        .replace(": null", ": None")
        .replace("[true", "[True")
        .replace("[false", "[False")
    )


def _php(value: Any, indent: str = "") -> str:
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "[]"
        items = [f"{inner}{_php(k)} => {_php(v, inner)}," for k, v in value.items()]
        return "[\n" + "\n".join(items) + f"\n{indent}]"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[" + ", ".join(_php(v, indent) for v in value) + "]"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(value)


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# A body as each sample writes it, by the body's repr (which tells apart every value JSON
# would, and more): most entities share their delete, getFields and getActions bodies.
_BODY_TEXTS: dict[str, tuple[str, str, str, str]] = {}
BODY_TEXTS_KEPT = 4096


def _body_texts(body: Any) -> tuple[str, str, str, str]:
    """``body`` as curl's JSON, a JavaScript literal, a Python literal and a PHP array."""
    key = repr(body)
    found = _BODY_TEXTS.get(key)
    if found is None:
        if len(_BODY_TEXTS) >= BODY_TEXTS_KEPT:
            _BODY_TEXTS.clear()
        found = _BODY_TEXTS[key] = (
            json.dumps(body, ensure_ascii=False),
            _js(body).replace("\n", "\n  "),
            _python(body).replace("\n", "\n    "),
            _php(body, "  "),
        )
    return found


def code_samples(
    method: str, path: str, *, body: Any = None, query: dict[str, Any] | None = None, token: bool = True
) -> list[dict[str, str]]:
    """curl, JavaScript fetch, Python httpx and PHP for one call."""
    url = BASE_URL + path + (("?" + urlencode(query)) if query else "")
    upper = method.upper()
    sends_body = upper == "POST"
    body = {} if body is None and sends_body else body
    as_json, as_js, as_python, as_php = _body_texts(body) if sends_body else ("", "", "", "")

    curl = [f"curl -s {_shell_quote(url)}"]
    if upper != "GET" and not sends_body:
        curl[0] = f"curl -s -X {upper} {_shell_quote(url)}"
    if token:
        curl.append(f'-H "Authorization: Bearer ${TOKEN_VARIABLE}"')
    if sends_body:
        curl += [
            "-H 'Content-Type: application/json'",
            f"-d {_shell_quote(as_json)}",
        ]

    js_headers = {"Content-Type": "application/json"} if sends_body else {}
    js_lines = [
        f"const response = await fetch({json.dumps(url)}, {{",
        f"  method: {json.dumps(upper)},",
        "  headers: {",
    ]
    js_lines += [f"    {json.dumps(k)}: {json.dumps(v)}," for k, v in js_headers.items()]
    if token:
        js_lines.append(f"    Authorization: `Bearer ${{process.env.{TOKEN_VARIABLE}}}`,")
    js_lines.append("  },")
    if sends_body:
        js_lines.append("  body: JSON.stringify(" + as_js + "),")
    js_lines += [
        "});",
        "const answer = await response.json();",
        "if (!response.ok) throw new Error(`${answer.status} ${answer.detail}`);",
    ]

    py = ["import os", "", "import httpx", ""]
    py_args = [f"    {json.dumps(url)},"]
    if token:
        py_args.append(f'    headers={{"Authorization": f"Bearer {{os.environ[\'{TOKEN_VARIABLE}\']}}"}},')
    if sends_body:
        py_args.append("    json=" + as_python + ",")
    py += [
        f"response = httpx.{method.lower()}(",
        *py_args,
        ")",
        "response.raise_for_status()  # errors are application/problem+json",
        "answer = response.json()",
    ]

    php_headers = ["'Content-Type: application/json'"] if sends_body else []
    if token:
        php_headers.append(f"'Authorization: Bearer ' . getenv('{TOKEN_VARIABLE}')")
    php = ["<?php", f"$ch = curl_init({_php(url)});"]
    php += ["curl_setopt_array($ch, [", "  CURLOPT_RETURNTRANSFER => TRUE,"]
    if sends_body:
        php += ["  CURLOPT_POST => TRUE,", "  CURLOPT_POSTFIELDS => json_encode(" + as_php + "),"]
    if php_headers:
        php.append("  CURLOPT_HTTPHEADER => [" + ", ".join(php_headers) + "],")
    php += [
        "]);",
        "$answer = json_decode(curl_exec($ch), TRUE);",
        "$status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);  // >= 400: a problem+json",
    ]

    return [
        {"lang": "Shell", "label": "curl", "source": " \\\n  ".join(curl)},
        {"lang": "JavaScript", "label": "fetch", "source": "\n".join(js_lines)},
        {"lang": "Python", "label": "httpx", "source": "\n".join(py)},
        {"lang": "PHP", "label": "PHP", "source": "\n".join(php)},
    ]

"""Builds `shelfwise.postman_collection.json` and `shelfwise.postman_environment.json`.

The committed JSON is what newman runs (`tests/e2e/test_postman.py`, or by hand against a
staging system: see README); this script is the readable source of it, and a test fails
when the JSON is not what the script writes. Run: `.venv/bin/python postman/build_collection.py`.

Every request asserts. Assertions that hold for *every* response (never a 5xx, an
`X-Request-ID`, problem+json on every error) live in the collection-level test script;
each request adds its own. Data is unique per run (`{{run}}`, a random suffix set by
the first request), so the collection runs again and again against any Shelfwise that
has the demo logins.
"""

# ruff: noqa: E501  (the test scripts are JavaScript source, kept one statement a line)

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from folders import FOLDERS  # type: ignore[import-not-found]  # postman/folders.py

HERE = Path(__file__).resolve().parent
COLLECTION = HERE / "shelfwise.postman_collection.json"
ENVIRONMENT = HERE / "shelfwise.postman_environment.json"
SCHEMA = "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"

# Run for every response of the collection (pm.sendRequest answers excluded).
EVERY_RESPONSE = """
const code = pm.response.code;
pm.test('[every] not a server error', () => pm.expect(code).to.be.below(500));
pm.test('[every] carries an X-Request-ID', () => {
  pm.expect(pm.response.headers.get('X-Request-ID')).to.be.a('string').that.is.not.empty;
});
pm.test('[every] X-Content-Type-Options: nosniff', () => {
  pm.expect(pm.response.headers.get('X-Content-Type-Options')).to.eql('nosniff');
});
if (code >= 400) {
  pm.test('[every error] is application/problem+json', () => {
    pm.expect(pm.response.headers.get('Content-Type')).to.match(/^application\\/problem\\+json/);
  });
  pm.test('[every error] has the RFC 9457 members and a stable code', () => {
    const problem = pm.response.json();
    pm.expect(problem).to.include.keys('type', 'title', 'status', 'detail', 'code');
    pm.expect(problem.status).to.eql(code);
    pm.expect(problem.code).to.match(/^[a-z_]+$/);
  });
}
""".strip()

# Prepended to each request's own test script: small helpers, nothing asserted.
HELPERS = """
const body = (() => { try { return pm.response.json(); } catch (e) { return undefined; } })();
const header = (name) => pm.response.headers.get(name);
const status = (expected) => pm.test(`status is ${expected}`, () => pm.response.to.have.status(expected));
const problem = (expected, slug) => {
  status(expected);
  pm.test(`problem code is ${slug}`, () => {
    const code = body && body.code;
    if (slug instanceof RegExp) pm.expect(code).to.match(slug);
    else pm.expect(code).to.eql(slug);
  });
};
const isJson = () => pm.test('JSON body', () => pm.expect(header('Content-Type')).to.match(/^application\\/json/));
const save = (name, value) => pm.collectionVariables.set(name, value);
const load = (name) => pm.collectionVariables.get(name);
""".strip()


# Prepended to each pre-request script.
PRE_HELPERS = """
const save = (name, value) => pm.collectionVariables.set(name, value);
const load = (name) => pm.collectionVariables.get(name);
""".strip()


def _lines(script: str) -> list[str]:
    return script.strip("\n").split("\n")


def _url(path: str) -> dict[str, Any]:
    """A v2.1 URL object for `{{baseUrl}}<path>`, query split out as the app shows it."""
    raw = "{{baseUrl}}" + path
    route, _, query = path.partition("?")
    url: dict[str, Any] = {
        "raw": raw,
        "host": ["{{baseUrl}}"],
        "path": [segment for segment in route.split("/") if segment],
    }
    if query:
        url["query"] = [
            {"key": key, "value": value}
            for key, _, value in (pair.partition("=") for pair in query.split("&"))
        ]
    return url


def request_item(spec: dict[str, Any]) -> dict[str, Any]:
    headers = [{"key": k, "value": v} for k, v in spec.get("headers", {}).items()]
    auth = spec.get("auth")
    if auth:
        headers.insert(0, {"key": "Authorization", "value": f"Bearer {{{{{auth}}}}}"})
    request: dict[str, Any] = {
        "method": spec["method"],
        "header": headers,
        "url": _url(spec["path"]),
    }
    if "json" in spec:
        headers.append({"key": "Content-Type", "value": "application/json"})
        request["body"] = {
            "mode": "raw",
            "raw": json.dumps(spec["json"], indent=2),
            "options": {"raw": {"language": "json"}},
        }
    elif "raw" in spec:
        request["body"] = {"mode": "raw", "raw": spec["raw"]}
    elif "file" in spec:
        request["body"] = {"mode": "file", "file": {"src": spec["file"]}}
    events = []
    if spec.get("pre"):
        events.append(
            {
                "listen": "prerequest",
                "script": {
                    "type": "text/javascript",
                    "exec": _lines(PRE_HELPERS + "\n" + spec["pre"]),
                },
            }
        )
    events.append(
        {
            "listen": "test",
            "script": {"type": "text/javascript", "exec": _lines(HELPERS + "\n" + spec["test"])},
        }
    )
    return {
        "name": spec["name"],
        "event": events,
        # The collection sends cookies itself (a `Cookie` header) where a request is
        # about a browser session; newman's cookie jar would make anonymous requests
        # authenticated ones.
        "protocolProfileBehavior": {"disableCookies": True},
        "request": request,
    }


def collection() -> dict[str, Any]:
    return {
        "info": {
            "name": "Shelfwise API",
            "description": (
                "Regression suite for the Shelfwise HTTP API, run by newman "
                "(tests/e2e/test_postman.py). Generated by postman/build_collection.py: "
                "edit the script, not this file."
            ),
            "schema": SCHEMA,
        },
        "event": [
            {
                "listen": "test",
                "script": {"type": "text/javascript", "exec": _lines(EVERY_RESPONSE)},
            }
        ],
        "item": [
            {"name": folder, "item": [request_item(spec) for spec in specs]}
            for folder, specs in FOLDERS
        ],
    }


def environment() -> dict[str, Any]:
    values = {
        "baseUrl": "http://127.0.0.1:8000",
        "adminEmail": "admin@shelfwise.local",
        "adminPassword": "admin-demo-password",
        "staffEmail": "staff@shelfwise.local",
        "staffPassword": "staff-demo-password",
        "customerEmail": "customer@shelfwise.local",
        "customerPassword": "customer-demo-password",
        # A receiver the server may call: on a staging system, a real public URL (the
        # SSRF guard refuses private addresses unless webhook_allowed_networks admits them).
        "webhookUrl": "http://127.0.0.1:9/shelfwise-hook",
        # An origin listed in the server's cors_origins (empty: CORS is off there).
        "corsOrigin": "https://console.shelfwise.example",
    }
    return {
        "name": "Shelfwise (local demo)",
        "values": [
            {"key": k, "value": v, "type": "default", "enabled": True} for k, v in values.items()
        ],
        "_postman_variable_scope": "environment",
    }


def render() -> dict[Path, str]:
    return {
        COLLECTION: json.dumps(collection(), indent=2) + "\n",
        ENVIRONMENT: json.dumps(environment(), indent=2) + "\n",
    }


def main() -> None:
    check = "--check" in sys.argv[1:]
    stale = []
    for path, text in render().items():
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)}")
    if stale:
        sys.exit(f"out of date (run postman/build_collection.py): {', '.join(stale)}")


if __name__ == "__main__":
    main()

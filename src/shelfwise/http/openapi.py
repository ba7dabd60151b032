"""The OpenAPI document tells the truth about errors.

Every error this API returns is an RFC 9457 problem (`application/problem+json`, see
`http/problems.py`), but FastAPI documents only the 422 of request validation, and with
its own `HTTPValidationError` shape, which the API never sends. This rewrites the
generated document once: every error response is a `Problem`; the statuses any
operation can answer are listed (400, 422, 429; 401 and 403 where it needs credentials;
404 where it takes a path parameter), and `default` covers the rest (e.g. 404 of a
referenced object, 413, 503).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from shelfwise.http.problems import PROBLEM_MEDIA_TYPE

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details. `code` is stable and "
    "machine-readable; `errors` lists the offending fields of an invalid request.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string"},
        "request_id": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
COMMON = {
    "400": "Malformed request",
    "422": "Invalid request fields",
    "429": "Rate limit or concurrency cap exceeded (see Retry-After)",
}
SECURED = {"401": "Missing or invalid credentials", "403": "Not allowed for this caller"}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}}}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    responses[status] = _problem(response.get("description") or "Error")
            wanted = dict(COMMON)
            if operation.get("security"):
                wanted.update(SECURED)
            if "{" in path:
                wanted["404"] = "No such resource"
            for status, description in wanted.items():
                responses.setdefault(status, _problem(description))
            responses.setdefault("default", _problem("Any other error"))
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's, never sent
        if f"#/components/schemas/{unused}" not in json.dumps(schema):
            components.pop(unused, None)
    return schema


def install_problem_docs(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

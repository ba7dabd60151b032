"""The OpenAPI document tells the truth about errors.

Every error this API returns is an RFC 9457 problem (`application/problem+json`, see
`http/problems.py`), but FastAPI documents only the 422 of request validation, and with
its own `HTTPValidationError` shape, which the API never sends. This rewrites the
generated document once: every error response is a `Problem`; the statuses any
operation can answer are listed (400, 405, 422, 429, 503; 408, 413 and 415 where it
takes a body; 401 and 403 where it needs credentials; 404 where it takes a path
parameter), and `default` covers the rest (e.g. 404 of a referenced object). The
`Idempotency-Key` header is documented with its pattern, and as required where it is.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from shelfwise.http.idempotency import HEADER as IDEMPOTENCY_HEADER
from shelfwise.http.idempotency import KEY_PATTERN, REQUIRED_MARKER
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
    "405": "Method not allowed (see Allow)",
    "422": "Invalid request fields",
    "429": "Rate limit or concurrency cap exceeded (see Retry-After)",
    "503": "Temporarily unavailable or over the request deadline (see Retry-After)",
}
WITH_BODY = {
    "408": "The request body did not arrive in time",
    "413": "Request body too large",
    "415": "Unsupported request media type",
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
            if "requestBody" in operation:
                wanted.update(WITH_BODY)
            if operation.get("security"):
                wanted.update(SECURED)
            if "{" in path:
                wanted["404"] = "No such resource"
            for status, description in wanted.items():
                responses.setdefault(status, _problem(description))
            responses.setdefault("default", _problem("Any other error"))
            document_idempotency_key(operation)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = PROBLEM_SCHEMA
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's, never sent
        if f"#/components/schemas/{unused}" not in json.dumps(schema):
            components.pop(unused, None)
    return schema


def document_idempotency_key(operation: dict[str, Any]) -> None:
    """The header as clients must send it: a string of the documented pattern (FastAPI
    adds a `null` branch no header can carry), `required` where the route needs it."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "header" or parameter.get("name") != IDEMPOTENCY_HEADER:
            continue
        schema = parameter.get("schema", {})
        required = bool(schema.pop(REQUIRED_MARKER, False))
        branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
        if branches:
            schema.update(branches[0])
        schema.update({"type": "string", "pattern": KEY_PATTERN})
        parameter["required"] = required


def install_problem_docs(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

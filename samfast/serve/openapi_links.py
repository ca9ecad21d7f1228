"""OpenAPI links from the routes that open a session to every route that takes its id.

A client (or a fuzzer's stateful phase) learns from the spec that the `session` of an open's answer
is the `{session_id}` of the session routes. The links are computed from the spec itself, so a
session route added later gets its link without touching this module.
"""

from __future__ import annotations

from fastapi import FastAPI

PARAMETER = "session_id"
FIELD = "session"


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:  # "#/components/schemas/Name"
        node = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _opens_session(spec: dict, operation: dict) -> bool:
    """Its 200 answer is JSON with a `session` field."""
    content = operation.get("responses", {}).get("200", {}).get("content", {})
    schema = _resolve(spec, content.get("application/json", {}).get("schema", {}))
    return FIELD in schema.get("properties", {})


def _link_name(operation: dict) -> str:
    # Link names are limited to [A-Za-z0-9.-_]; the summary ("Undo Last") reads best.
    name = "".join(c for c in operation.get("summary", "").title() if c.isalnum())
    return name or operation["operationId"]


def add_session_links(spec: dict) -> dict:
    """``spec`` with links from each session-opening operation to each `{session_id}` operation."""
    targets = {}
    for path, item in spec.get("paths", {}).items():
        if "{" + PARAMETER + "}" not in path:
            continue
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                targets[_link_name(operation)] = {
                    "operationId": operation["operationId"],
                    "parameters": {PARAMETER: f"$response.body#/{FIELD}"},
                }
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            if (
                "{" + PARAMETER + "}" not in path
                and isinstance(operation, dict)
                and _opens_session(spec, operation)
            ):
                operation["responses"]["200"].setdefault("links", {}).update(targets)
    return spec


def install(app: FastAPI) -> None:
    """Serve the spec with the links: built on first request (all routes are there by then), cached."""
    build = app.openapi

    def openapi() -> dict:
        if not app.openapi_schema:
            app.openapi_schema = add_session_links(build())
        return app.openapi_schema

    app.openapi = openapi

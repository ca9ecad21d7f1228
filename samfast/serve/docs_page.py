"""The /docs page: Swagger UI that asks for the API key first, then fetches the spec with it.

The page itself needs no key (it holds nothing); the spec and every route do. Swagger UI's own
Authorize button is pre-filled with the key, so "Try it out" sends it too.

Swagger UI's files ship inside the package (static/swagger-ui, with their licence) and are served
by the app itself: planning workstations usually have no internet, and a CDN would leave the page
blank there.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse

ASSET_DIR = Path(__file__).with_name("static") / "swagger-ui"
ASSET_PREFIX = "/static/swagger-ui"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
}
# The files change only with the package; a day keeps a reinstalled version from lingering long.
CACHE_CONTROL = "public, max-age=86400"
# Relative to /docs, so the page still works behind a proxy that mounts the service under a prefix.
SWAGGER = ASSET_PREFIX.lstrip("/")


def asset_paths() -> set[tuple[str, str]]:
    """(method, path) pairs the Guard lets through without the key: the files are public anyway."""
    return {(method, f"{ASSET_PREFIX}/{name}") for name in ASSETS for method in ("GET", "HEAD")}


def add_asset_routes(app: FastAPI) -> None:
    """One fixed route per file (not a directory mount), so nothing else under the folder is served."""

    @app.api_route(f"{ASSET_PREFIX}/{{name}}", methods=["GET", "HEAD"], include_in_schema=False)
    def swagger_asset(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, f"no file {name!r}")
        return FileResponse(
            ASSET_DIR / name, media_type=ASSETS[name], headers={"Cache-Control": CACHE_CONTROL}
        )


def docs_html(title: str, spec_url: str, header: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)} API</title>
<link rel="stylesheet" href="{SWAGGER}/swagger-ui.css"></head>
<body>
<form id="key" style="font-family:sans-serif;margin:1em">
  <label>API key ({html.escape(header)}): <input type="password" id="value" autocomplete="off"></label>
  <button type="submit">Load the API</button>
</form>
<div id="swagger-ui"></div>
<script src="{SWAGGER}/swagger-ui-bundle.js"></script>
<script>
const specUrl = {json.dumps(spec_url)}, header = {json.dumps(header)};
document.getElementById("key").addEventListener("submit", async (event) => {{
  event.preventDefault();
  const key = document.getElementById("value").value;
  const reply = await fetch(specUrl, {{headers: {{[header]: key}}}});
  if (!reply.ok) {{ alert((await reply.json()).detail); return; }}
  // validatorUrl null: Swagger UI would otherwise send the spec to validator.swagger.io.
  const ui = SwaggerUIBundle({{spec: await reply.json(), dom_id: "#swagger-ui", validatorUrl: null}});
  ui.preauthorizeApiKey("APIKeyHeader", key);
}});
</script></body></html>"""

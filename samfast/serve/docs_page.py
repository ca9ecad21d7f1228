"""The /docs page: Swagger UI that asks for the API key first, then fetches the spec with it.

The page itself needs no key (it holds nothing); the spec and every route do. Swagger UI's own
Authorize button is pre-filled with the key, so "Try it out" sends it too.
"""

from __future__ import annotations

import html
import json

SWAGGER = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"


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
  const ui = SwaggerUIBundle({{spec: await reply.json(), dom_id: "#swagger-ui"}});
  ui.preauthorizeApiKey("APIKeyHeader", key);
}});
</script></body></html>"""

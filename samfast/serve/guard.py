"""ASGI middleware in front of every route: the API key, body-size caps, a complete ``Allow`` on
405 (answered here), and a bug answered as one JSON 500 line while the connection stays open.

It sits inside Starlette's ServerErrorMiddleware, which would otherwise re-raise a handler's
exception to uvicorn: uvicorn then logs the traceback a second time and closes the kept-alive
connection, so the client's next request on it is reset.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets

from starlette.exceptions import HTTPException

log = logging.getLogger("samfast.serve")
API_KEY_HEADER = "x-api-key"


class BodyTooLarge(HTTPException):
    """Raised from ``receive``: an HTTPException, so FastAPI's body parsing passes it on as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")


async def send_json(send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """``open_paths``: (method, path) pairs served without the key (the docs page, not the spec).
    ``body_limits``: path -> largest body; every other path gets ``default_limit``.
    ``methods``: a callable path -> the methods some route serves there (for ``Allow``)."""

    def __init__(self, app, api_key: str, default_limit: int, body_limits: dict, open_paths, methods) -> None:
        self.app, self.key = app, api_key.encode()
        self.default_limit, self.body_limits = default_limit, body_limits
        self.open_paths, self.methods = set(open_paths), methods

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        public = (scope["method"], scope["path"]) in self.open_paths
        if not public and not hmac.compare_digest(headers.get(API_KEY_HEADER.encode(), b""), self.key):
            return await send_json(send, 401, f"missing or wrong API key (header {API_KEY_HEADER})")
        allowed = self.methods(scope["path"])
        if allowed and scope["method"] not in allowed:
            allow = [(b"allow", ", ".join(sorted(allowed)).encode())]
            return await send_json(send, 405, f"method {scope['method']} not allowed here", allow)
        limit = self.body_limits.get(scope["path"], self.default_limit)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > limit:
            return await send_json(send, 413, f"request body larger than {limit} bytes")
        received, started = 0, False

        async def counted():  # chunked bodies carry no length: count as they arrive
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as error:
            if not started:
                await send_json(send, 413, str(error.detail))
        except Exception as error:  # a bug: one log line, one JSON line, and the server keeps serving
            reference = secrets.token_hex(4)
            message = " ".join(str(error).split())[:300]
            log.error(
                "internal error %s in %s %s: %s: %s",
                reference, scope["method"], scope["path"], type(error).__name__, message,
                exc_info=bool(os.environ.get("SAMFAST_DEBUG")),
            )  # fmt: skip
            if not started:
                detail = f"internal error {type(error).__name__} (reference {reference}; see the server log)"
                await send_json(send, 500, detail)

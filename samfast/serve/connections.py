"""How long a client may take to send a request, and how many connections may be open at once.

uvicorn's ``timeout_keep_alive`` closes a connection idle *between* requests only: one that never
sends its first request line, or sends its headers or body a byte a second, is waited for without
end. So the HTTP protocol here (uvicorn's h11 protocol, subclassed) keeps one deadline per
connection for what it is waiting to read: the request line and headers (from the connection's
start, or from the previous response) and then the body (from the end of the headers). Data
arriving does not extend a deadline, so a trickle is cut off like silence. While the application
works on a request nothing is read and no deadline runs.

A connection beyond ``max_connections`` is answered 503 at once and closed, so silent connections
cannot hold more than that many sockets until their deadline closes them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ConnectionLimits", "protocol_class"]

log = logging.getLogger("uvicorn.error")


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # request line + headers, from connecting or the previous response
    body_timeout: float = 120.0  # the whole body after its headers: 256 MiB at >= 2.2 MB/s
    keep_alive_timeout: float = 5.0  # idle between requests (uvicorn's default)
    max_connections: int = 256  # open at once; each costs a socket and up to 64 KiB of buffered body


def _refusal(detail: str) -> bytes:
    """A complete 503 written before any request is read (h11 only answers a request it parsed)."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with a read deadline and a cap on open connections."""

    limits = ConnectionLimits()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            log.warning("refused a connection: %d open, the limit", self.limits.max_connections)
            detail = f"more than {self.limits.max_connections} connections open; try again shortly"
            transport.write(_refusal(detail))
            transport.close()
            return
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None)
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Keep the deadline of what the connection now waits for from the client (nothing while
        the application works or the connection is closing)."""
        state = self.conn.their_state
        waiting_for = {h11.IDLE: "headers", h11.SEND_BODY: "body"}.get(state)
        if self.transport.is_closing():
            waiting_for = None
        if waiting_for != self._waiting_for:
            self._arm(waiting_for)

    def _arm(self, waiting_for: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, waiting_for
        if waiting_for is not None:
            seconds = self.limits.header_timeout if waiting_for == "headers" else self.limits.body_timeout
            self._deadline = self.loop.call_later(seconds, self._expired, waiting_for, seconds)

    def _expired(self, waiting_for: str, seconds: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # a silent connection is routine (port scans, clients that gave up): not worth a log line
        level = logging.INFO if waiting_for == "body" else logging.DEBUG
        log.log(level, "closed %s: request %s not sent within %g s", self.client, waiting_for, seconds)
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[DeadlineProtocol]:
    """The protocol class to give uvicorn (``http=``) for these limits."""
    return type("DeadlineProtocol", (DeadlineProtocol,), {"limits": limits})

"""uvicorn's HTTP/1.1 protocol with a deadline for request headers (slow and idle clients).

uvicorn times out a keep-alive connection only *after* a response; a client that connects
and then sends nothing, or trickles a request header a byte at a time (slowloris), holds a
connection (and a file descriptor) forever. :class:`TimedH11Protocol` closes a connection
that has not delivered a complete request header within :data:`HEADER_TIMEOUT_S` seconds of
connecting or of its previous response. Header size stays bounded by h11's
``h11_max_incomplete_event_size``; request bodies are bounded by the server's body limit.

Use it with ``uvicorn.Config(app, http=TimedH11Protocol, ...)`` (see :data:`UVICORN_OPTIONS`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a connection may take to send a complete request header.
HEADER_TIMEOUT_S = 10.0


class TimedH11Protocol(H11Protocol):
    """H11Protocol that closes connections that send no complete request header in time."""

    header_timeout_s: float = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
        cycle = self.cycle  # the request in progress when armed (None on a new connection)
        self._header_timer = self.loop.call_later(
            self.header_timeout_s, self._header_deadline, cycle
        )

    def _header_deadline(self, cycle_when_armed: Any) -> None:
        started_since = self.cycle is not cycle_when_armed
        busy = self.cycle is not None and not self.cycle.response_complete
        if started_since or busy or self.transport.is_closing():
            return  # a request arrived in time (its response re-arms the deadline)
        self.transport.close()


#: Options every embedsearch server passes to ``uvicorn.Config`` / ``uvicorn.run``.
UVICORN_OPTIONS: dict[str, Any] = {"http": TimedH11Protocol, "timeout_keep_alive": 5}

__all__ = ["HEADER_TIMEOUT_S", "TimedH11Protocol", "UVICORN_OPTIONS"]

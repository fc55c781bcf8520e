"""uvicorn's HTTP/1.1 protocol with deadlines for request headers and bodies (slow clients).

uvicorn times out a keep-alive connection only *after* a response; a client that connects
and then sends nothing, or trickles a request header a byte at a time (slowloris), holds a
connection (and a file descriptor) forever. :class:`TimedH11Protocol` closes a connection
that has not delivered a complete request header within :data:`HEADER_TIMEOUT_S` seconds of
connecting or of its previous response. Header size stays bounded by h11's
``h11_max_incomplete_event_size``; request bodies are bounded by the server's body limit.

A body gets a deadline too, in the manner of Apache's ``mod_reqtimeout`` (``body=20,
MinRate=500``): :data:`BODY_TIMEOUT_S` seconds from its header, extended by one second per
:data:`BODY_MIN_RATE` bytes received, so a large upload at any real speed completes while a
client that announces a body and then trickles it a byte at a time is cut off. Time during
which the server itself stopped reading (flow control, a busy app) does not count.

Use it with ``uvicorn.Config(app, http=TimedH11Protocol, ...)`` (see :data:`UVICORN_OPTIONS`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: Seconds a connection may take to send a complete request header.
HEADER_TIMEOUT_S = 10.0
#: Seconds a request body may take, before the allowance its received bytes earn.
BODY_TIMEOUT_S = 20.0
#: Bytes per second of body that keep extending the body deadline.
BODY_MIN_RATE = 500.0


class TimedH11Protocol(H11Protocol):
    """H11Protocol that closes connections that send no complete request header in time."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    body_min_rate: float = BODY_MIN_RATE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        for name in ("_header_timer", "_body_timer"):
            timer = getattr(self, name, None)
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        cycle = self.cycle
        if cycle is None or not cycle.more_body or self.transport.is_closing():
            return
        if cycle is not getattr(self, "_body_cycle", None):  # a new request's body begins
            self._body_cycle = cycle
            self._body_bytes = 0
            self._body_start = self.loop.time()
            self._body_paused = 0.0
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_deadline)
        self._body_bytes += len(data)

    def _body_deadline(self) -> None:
        cycle = self._body_cycle
        if cycle is not self.cycle or not cycle.more_body or self.transport.is_closing():
            return  # the body arrived (or the connection went)
        if self.flow.read_paused:  # the server is not reading: not the client's fault
            self._body_paused += 1.0
            self._body_timer = self.loop.call_later(1.0, self._body_deadline)
            return
        deadline = (
            self._body_start
            + self._body_paused
            + self.body_timeout_s
            + self._body_bytes / self.body_min_rate
        )
        left = deadline - self.loop.time()
        if left > 0:
            self._body_timer = self.loop.call_later(left, self._body_deadline)
            return
        self.transport.close()  # the app's receive() sees http.disconnect

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

__all__ = [
    "BODY_MIN_RATE",
    "BODY_TIMEOUT_S",
    "HEADER_TIMEOUT_S",
    "TimedH11Protocol",
    "UVICORN_OPTIONS",
]

"""Progress of long CLI work: a bar with total and ETA on a terminal, a log line otherwise.

On a terminal, tqdm draws the bar (with the total and an ETA whenever the total is known).
When stderr is not a terminal (a log file, CI, a pipe), a plain line is written every
``EMBEDSEARCH_PROGRESS_SECONDS`` seconds (default 10) instead, so a long run is never silent
and never fills a log with carriage returns::

    index: 4,096/20,000 documents (20%), 151 docs/s, ETA 1m45s
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Counts work done against an optional total; draws or logs it (see module docs).

    Args:
        what: the label (``index``, ``ingest``).
        unit: what is counted (``documents``, ``files``).
        total: the known total, or None.
        stream: where to write (stderr).
        interval: seconds between log lines when ``stream`` is not a terminal.
    """

    def __init__(
        self,
        what: str,
        unit: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
    ) -> None:
        self.what, self.unit, self.total = what, unit, total
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.monotonic()
        env = os.environ.get("EMBEDSEARCH_PROGRESS_SECONDS")
        self.interval = interval if interval is not None else float(env or 10.0)
        self._last = self.start
        self._bar: Any = None
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream)

    def line(self) -> str:
        """``index: 4,096/20,000 documents (20%), 151 docs/s, ETA 1m45s``."""
        took = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / took
        if self.total:
            pct = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else None
            tail = f", ETA {_duration(eta)}" if eta is not None else ""
            return (
                f"{self.what}: {self.done:,}/{self.total:,} {self.unit} ({pct:.0f}%), "
                f"{rate:,.0f} {self.unit}/s{tail}"
            )
        return f"{self.what}: {self.done:,} {self.unit}, {rate:,.0f} {self.unit}/s"

    def update(self, n: int) -> None:
        """Count ``n`` more units of work."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        """Stop drawing (the caller prints its own summary)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

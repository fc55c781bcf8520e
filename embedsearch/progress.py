"""Progress bars for long work, with totals, and no tqdm import where none is shown."""

from __future__ import annotations

from typing import Any


class NoBar:
    """The bar of work that shows none: importing tqdm for a disabled bar cost 50 ms of a
    process's first add (4 % of embedding 1,000 texts here)."""

    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


def progress_bar(
    total: int | None, show: bool, desc: str, *, unit: str = "doc", delay: float = 0.0
) -> Any:
    """A tqdm bar on stderr over ``total`` units of work (a :class:`NoBar` unless ``show``);
    ``delay``: seconds before it first appears (quick work shows nothing)."""
    if not show:
        return NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, mininterval=1.0, delay=delay)

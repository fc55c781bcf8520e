"""Which consecutive segments share one keyword postings file.

A keyword query reads, for each query term, one run of postings per postings file: over a
million rows in 20 segments that is 180 reads and 20 dictionary look-ups for a 9-term
query, a fixed cost that grows with the segment count (5M rows: 100 segments). So the store
(:mod:`.bm25`) merges the postings of settled segments into *groups* of about
:data:`FAN_IN` consecutive segments, one file each (``grp-<key>.kw``), and reads a group as
one unit.

The grouping is a pure function of the segment list, so every process holding the same
collection state agrees on it and finds the same files:

* Only *settled* segments join groups: those of at least :data:`SETTLED_ROWS` rows. The
  collection merges smaller ones (the trailing run of small segments) into larger ones,
  which would make a group of them stale at once.
* A group ends after a segment whose checksum says so (about one segment in
  :data:`FAN_IN`: *content-defined* boundaries), or at :data:`MAX_SEGMENTS` segments or
  :data:`MAX_ROWS` rows. Rewriting one segment (a compaction) changes its own group only,
  and the one after it at most; boundaries found by position would shift every later group.
* The trailing run of settled segments not yet ended stays ungrouped: the next segments
  may belong to it, and merging it at every commit would rewrite it again and again.

A group is named by a SHA-256 over its members' files, checksums and rows: a file is only
ever used for exactly the segments it was merged from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..segment import Segment

#: Rows from which a segment is settled (the collection's own threshold for small
#: segments, ``collection.COMPACT_KEEP_ROWS``: smaller trailing ones get merged).
SETTLED_ROWS = 32_768
#: About how many segments a group holds (one segment in FAN_IN ends a group).
FAN_IN = 8
#: At most this many segments in a group.
MAX_SEGMENTS = 16
#: At most this many rows in a group: a merge holds the group's postings in memory (about
#: 25 postings a row of abstracts: 100 MB at this size).
MAX_ROWS = 524_288


@dataclass(frozen=True)
class Group:
    """Segments ``first`` to ``end - 1`` of a segment list, merged into one file."""

    first: int
    end: int
    key: str  # SHA-256 hex over the members: the file's source
    rows: int
    members: tuple[str, ...]  # the members' segment files

    @property
    def name(self) -> str:
        """The file's name in the postings folder."""
        return f"grp-{self.key[:32]}.kw"


def plan(segments: Sequence[Segment], groupable: Callable[[Segment], bool]) -> list[Group]:
    """The groups of ``segments`` (in order; two members at least). ``groupable`` says which
    segments may join one at all (settled or not is judged here)."""
    out: list[Group] = []
    run: list[int] = []
    rows = 0

    def close() -> None:
        if len(run) >= 2:
            members = [segments[i] for i in run]
            out.append(
                Group(
                    run[0],
                    run[-1] + 1,
                    group_key(members),
                    rows,
                    tuple(s.ref.file for s in members),
                )
            )
        run.clear()

    for i, seg in enumerate(segments):
        if seg.rows < SETTLED_ROWS or not groupable(seg):
            run.clear()  # the run before stays ungrouped: it was not ended
            rows = 0
            continue
        if run and rows + seg.rows > MAX_ROWS:
            close()
            rows = 0
        run.append(i)
        rows += seg.rows
        if _ends_group(seg) or len(run) >= MAX_SEGMENTS:
            close()
            rows = 0
    return out


def group_key(members: Sequence[Segment]) -> str:
    """The SHA-256 hex naming a group of ``members`` (their files, checksums and rows)."""
    text = "\n".join(f"{s.ref.file}:{s.ref.sha256}:{s.rows}" for s in members)
    return hashlib.sha256(text.encode()).hexdigest()


def _ends_group(seg: Segment) -> bool:
    """Whether a group ends after ``seg``: its checksum's first bits, so about one segment
    in :data:`FAN_IN` (a content-defined boundary)."""
    return int(seg.ref.sha256[:8], 16) % FAN_IN == 0

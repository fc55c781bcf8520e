"""Scale-out on Ray: distributed embedding into ordinary collections, and sharded search.

Install with ``pip install 'embedsearch[distributed]'``. Nothing here imports Ray until it
is used, so ``import embedsearch.distributed`` is cheap and works without Ray installed
(the ``ingest`` function shadows the ``ingest`` submodule on purpose).

* :func:`ingest` — Ray Data reads Parquet / JSONL / CSV shards (local or any pyarrow URI),
  a pool of encoder actors embeds them, and the driver commits them into a collection
  through its normal commit protocol. Resumable.
* :class:`ShardedCollection` — N ordinary collections partitioned by id hash, each served
  by a Ray actor; queries fan out and the top-k are merged. Same methods as ``Collection``.

See ``docs/scaling.md`` for sizing (memory per vector, shard counts, fan-out latency).
"""

from __future__ import annotations

from .ingest import IngestReport, ingest
from .layout import is_sharded, shard_of
from .sharded import ShardedCollection, open_sharded

__all__ = ["ingest", "IngestReport", "ShardedCollection", "open_sharded", "is_sharded", "shard_of"]

"""The query layer's wing: the embedding space itself as the interface.

One concept per module, from the ground up:

* :mod:`.marker` — reads the vocabulary marker (is this collection a word list?);
* :mod:`.expr` — the expression language (``"king - man + woman"``) parsed into terms;
* :mod:`.interpolate` — lerp / slerp between unit vectors;
* :mod:`.clustering` — k-means clusters and outliers over a collection's selection;
* :mod:`.maps` — 2-D maps of a collection to PNG and HTML;
* :mod:`.topics` — the topic hierarchy (over-cluster, Ward tree, levels, phrase labels);
* :mod:`.directions` — a unit axis from a few examples of each end of a concept;
* :mod:`.mixin` — :class:`LatentMixin`, the methods :class:`~embedsearch.Collection` gains
  (``expr``, ``most_similar``, ``analogy``, ``interpolate``, ``cluster``, ``topics``,
  ``direction``, ``along``, ``outliers``, ``map``…). It sits on top of the modules above and imports its host only for typing.

Nothing here imports :mod:`embedsearch.collection` at run time, nor anything built on
collections (vocabularies, evaluation, surfaces).
"""

from __future__ import annotations

from .clustering import Clustering
from .interpolate import lerp, slerp
from .maps import MapResult
from .mixin import InterpolationStep, LatentMixin
from .topics import Topic, TopicLevel, Topics

__all__ = [
    "Clustering",
    "InterpolationStep",
    "LatentMixin",
    "MapResult",
    "Topic",
    "TopicLevel",
    "Topics",
    "lerp",
    "slerp",
]

"""Every user-facing error lives in embedsearch/errors.py and is exported from embedsearch."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import embedsearch
from embedsearch import errors


def _all_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(embedsearch.__path__, "embedsearch.")
        if not m.name.startswith("embedsearch.data") and not m.name.endswith(".__main__")
    ]


def test_every_error_class_is_defined_in_errors_py_and_exported() -> None:
    defined_elsewhere = []
    for name in _all_modules():
        module = importlib.import_module(name)
        for attr, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, errors.EmbedSearchError)
                and obj.__module__ != "embedsearch.errors"
            ):
                defined_elsewhere.append(f"{obj.__module__}.{attr}")
    assert not defined_elsewhere, "define these in embedsearch/errors.py: " + ", ".join(
        sorted(set(defined_elsewhere))
    )
    family = [
        n
        for n, c in vars(errors).items()
        if inspect.isclass(c) and issubclass(c, errors.EmbedSearchError)
    ]
    assert len(family) >= 20
    assert sorted(n for n in family if n not in embedsearch.__all__) == []
    for n in family:
        assert getattr(embedsearch, n) is getattr(errors, n)

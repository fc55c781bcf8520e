"""Count import loops and upward imports in embedsearch, as grimp (import-linter's graph) sees them.

    python tools/layering.py [SRC_DIR]     # default: the repository root

Reads the package under SRC_DIR without running it. Imports inside function bodies count;
imports under ``if TYPE_CHECKING:`` do not (as in the import-linter contract in
pyproject.toml). Two numbers, each with the imports behind it:

* **loops** — strongly connected groups of modules (files) that import each other;
* **upward imports** — module pairs where a module imports one on a higher layer of
  docs/architecture.md. Layers are assigned by concept, so the count also works on the
  layout before ``latent/`` became a package (``clustering.py`` etc. at the top level).

``lint-imports`` is the check CI runs; this script is the measure for before/after notes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

# The layers are read from the import-linter contract in pyproject.toml (the one CI checks),
# so this measure and the check can never disagree. Modules of the layout before the
# house moves are placed by concept, so the count also works on an old checkout.
_LEGACY = {
    "ingest": "readers",  # the input reader before it became readers.py
    "clustering": "latent",
    "maps": "latent",
    "expr": "latent",
    "interpolate": "latent",
    "memtable": "table",
}


def _contract_layers(pyproject: Path) -> list[tuple[str, ...]]:
    """Layers of the ``layers`` contract, from the ground up, as module-name prefixes."""
    import tomllib

    config = tomllib.loads(pyproject.read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    top_down = next(c["layers"] for c in contracts if c.get("type") == "layers")
    layers: list[tuple[str, ...]] = []
    for entry in reversed(top_down):
        names = [n.strip() for n in entry.split("|")]
        names += [old for old, new in _LEGACY.items() if new in names]
        layers.append(tuple(f"embedsearch.{n}" for n in names))
    return layers


LAYERS: list[tuple[str, ...]] = _contract_layers(
    Path(__file__).resolve().parents[1] / "pyproject.toml"
)
ROOT_RANK = len(LAYERS)  # embedsearch/__init__.py re-exports everything: the top


def rank(module: str) -> int:
    if module == "embedsearch":
        return ROOT_RANK
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise SystemExit(f"{module} is on no layer: add it to LAYERS in {__file__}")


def loops(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def main(src: str = ".") -> int:
    sys.path.insert(0, str(Path(src).resolve()))
    graph = grimp.build_graph("embedsearch", exclude_type_checking_imports=True)
    found = loops(graph)
    print(f"import loops: {len(found)}")
    for group in found:
        print(f"  {len(group)} modules: {', '.join(group)}")
    upward = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            if rank(importer) < rank(imported):
                lines = sorted(
                    d["line_number"]
                    for d in graph.get_import_details(importer=importer, imported=imported)
                )
                upward.append(f"{importer} -> {imported} (l.{', l.'.join(map(str, lines))})")
    print(f"upward imports: {len(upward)}")
    for line in upward:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))

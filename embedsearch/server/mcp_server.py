"""A Model Context Protocol server: the collections under a home as tools for AI agents.

``embedsearch mcp [--home DIR] [--allow-writes]`` serves it over stdio with the official
``mcp`` SDK (extra ``mcp``). Tools:

* ``list_collections`` — names, sizes, models, index kinds.
* ``search`` — the ``k`` documents nearest a text query (``dense``), or by keywords
  (``bm25``) or both fused (``hybrid``); metadata filters with ``where``.
* ``retrieve`` — RAG passages with their source and character span, for citations.
* ``get`` — stored documents by id.
* with ``--allow-writes`` only: ``add``, ``upsert``, ``delete``.

Every tool calls the same :class:`~embedsearch.Collection` methods as the CLI, and a bad
call comes back as a tool error (``isError``) carrying the CLI's own message
(:class:`~embedsearch.errors.EmbedSearchError`), never as a crashed server. Reads share one
handle per collection; each write opens a short-lived handle and closes it, so the write lock
is held only while a write runs and ``embedsearch serve`` or the CLI can write in between.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field

from .. import store
from .._version import __version__
from ..collection import Collection
from ..collection import open as open_collection
from ..errors import CollectionExistsError, EmbedSearchError, InvalidInputError
from ..validation import validate_name

T = TypeVar("T")
MAX_K = 200
SNIPPET = 2000

INSTRUCTIONS = """\
Semantic search over the user's local text collections (embedsearch).
Start with list_collections to see what exists. search finds documents by meaning (mode
"dense"), by exact keywords (mode "bm25") or both ("hybrid", best for names, codes and rare
words). retrieve returns passages with source file and character span: use it to answer
questions with citations. get reads documents by id. Filter with `where`, a metadata filter
such as {"year": {"$gte": 2020}} or {"topic": {"$in": ["a", "b"]}}."""

CollectionArg = Annotated[
    str,
    Field(
        description="Collection name, as listed by list_collections.",
        min_length=1,
        max_length=128,
    ),
]
QueryArg = Annotated[str, Field(description="What to look for, in natural language.", min_length=1)]
WhereArg = Annotated[
    dict[str, Any] | None,
    Field(
        description='Metadata filter applied before ranking, e.g. {"topic": "music"}, '
        '{"year": {"$gte": 2020}}; operators $eq $ne $in $nin $gt $gte $lt $lte $exists '
        "$and $or $not; dotted paths reach nested fields. Omit for no filter."
    ),
]
ModeArg = Annotated[
    Literal["dense", "bm25", "hybrid"],
    Field(
        description="dense: by meaning (embeddings); bm25: by keywords; hybrid: both, fused "
        "(good when the query holds names, codes or rare words)."
    ),
]
FusionArg = Annotated[
    Literal["rrf", "convex", "dbsf"] | None,
    Field(description="How hybrid mode fuses the two rankings (default: the engine's)."),
]
IdsArg = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=512)]],
    Field(description="Document ids.", min_length=1, max_length=1000),
]


DocsArg = Annotated[
    list[dict[str, Any]],
    Field(
        description='Documents to add: [{"id"?: str, "text": str, "metadata"?: object}]; '
        "give every document an id or none (ids are then generated).",
        min_length=1,
        max_length=1000,
    ),
]
UpsertDocsArg = Annotated[
    list[dict[str, Any]],
    Field(
        description='Documents to insert or replace: [{"id": str, "text": str, '
        '"metadata"?: object}].',
        min_length=1,
        max_length=1000,
    ),
]


class Collections:
    """Collections under ``EMBEDSEARCH_HOME``: shared read handles, short-lived write handles.

    Collections open by bare name (checked by :func:`validate_name`, so a tool call can never
    reach outside the home) through ``opener`` (default ``embedsearch.open(name,
    create=False)``); ``embedsearch mcp`` passes the CLI's own opener, so the same lookups
    give the CLI's errors, word for word.
    """

    def __init__(self, opener: Callable[[str], Collection] | None = None) -> None:
        from ..collection import home

        self.home = home()
        self._opener = opener or (lambda name: open_collection(name, create=False))
        self._handles: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.home / validate_name(name)

    def names(self) -> list[str]:
        if not self.home.is_dir():
            return []
        out = []
        for entry in sorted(self.home.iterdir()):
            try:
                validate_name(entry.name)
            except InvalidInputError:
                continue
            if (entry / store.MANIFEST).is_file():
                out.append(entry.name)
        return out

    def get(self, name: str) -> Collection:
        """The shared read handle (opened on first use; reopened if the folder was replaced)."""
        path = self.path(name)
        with self._lock:
            col = self._handles.get(name)
            if col is not None and path.is_dir():
                return col
            if col is not None:
                self._handles.pop(name).close()
            col = self._opener(name)
            self._handles[name] = col
            return col

    def write(self, name: str, fn: Callable[[Collection], T], *, create: bool = False) -> T:
        """Run ``fn`` on a handle opened for this write only (the lock is released after)."""
        validate_name(name)
        with open_collection(name, create=create) as col:
            return fn(col)

    def close(self) -> None:
        with self._lock:
            handles, self._handles = self._handles, {}
        for col in handles.values():
            col.close()


class RegistryCollections:
    """The HTTP server's :class:`~.registry.Registry` as MCP's collections (``serve --mcp``):
    the tools share the routes' open handles and write through the registry's lock waits."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def names(self) -> list[str]:
        return self.registry.names()

    def get(self, name: str) -> Any:
        return self.registry.get(name)

    def write(self, name: str, fn: Callable[[Any], T], *, create: bool = False) -> T:
        if create and name not in self.registry.names():
            with contextlib.suppress(CollectionExistsError):  # created meanwhile: fine
                self.registry.create(name)
        return self.registry.write(name, fn)


def _hit(h: Any) -> dict[str, Any]:
    return {"id": h.id, "score": round(float(h.score), 6), "text": h.text, "metadata": h.metadata}


def _passage(p: Any) -> dict[str, Any]:
    out = p.to_dict()
    out["score"] = round(float(out["score"]), 6)
    return out


def _documents(docs: list[dict[str, Any]], *, id_required: bool) -> tuple[Any, ...]:
    texts, ids, metas = [], [], []
    for i, d in enumerate(docs):
        if not isinstance(d, dict) or not isinstance(d.get("text"), str):
            raise InvalidInputError(f'documents[{i}] needs a "text" string.')
        unknown = set(d) - {"id", "text", "metadata"}
        if unknown:
            raise InvalidInputError(
                f"documents[{i}] has unknown field(s) {sorted(unknown)}; use id, text, metadata."
            )
        if id_required and not d.get("id"):
            raise InvalidInputError(f'documents[{i}] needs an "id" (upsert replaces by id).')
        texts.append(d["text"])
        ids.append(d.get("id"))
        metas.append(d.get("metadata"))
    given_ids = None if all(i is None for i in ids) else ids
    if given_ids is not None and any(i is None for i in ids):
        raise InvalidInputError("give every document an id, or none (ids are then generated).")
    return texts, given_ids, None if all(m is None for m in metas) else metas


def _tool_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Turn EmbedSearchError into a tool error with the CLI's message."""
    from functools import wraps

    from mcp.server.mcpserver.exceptions import ToolError

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except EmbedSearchError as exc:
            raise ToolError(str(exc)) from exc

    return wrapper


def build_server(cols: Collections | RegistryCollections, *, allow_writes: bool = False) -> Any:
    """The MCP server (an ``mcp.server.MCPServer``) over the collections of ``cols``.

    Args:
        cols: the collections (``Collections()``); the caller closes them.
        allow_writes: also offer ``add``, ``upsert`` and ``delete``.

    Raises:
        InvalidInputError: the ``mcp`` SDK is not installed.
    """
    try:
        from mcp.server import MCPServer
        from mcp.types import ToolAnnotations
    except ImportError as exc:
        raise InvalidInputError(
            "the MCP server needs the mcp SDK: `pip install 'embedsearch[mcp]'`."
        ) from exc
    server = MCPServer(
        name="embedsearch", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING"
    )
    read_only = ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False)

    @_tool_errors
    def list_collections() -> dict[str, Any]:
        """List the collections: name, number of documents, embedding model, index kind."""
        out = []
        for name in cols.names():
            try:
                info = cols.get(name).info()
            except EmbedSearchError as exc:
                out.append({"name": name, "error": str(exc)})
                continue
            out.append(
                {
                    "name": name,
                    "count": info["count"],
                    "model": info["model"].get("name"),
                    "index": info["index"].get("kind"),
                    "updated": info["updated"],
                }
            )
        return {"collections": out}

    @_tool_errors
    def search(
        collection: CollectionArg,
        query: QueryArg,
        k: Annotated[int, Field(description="How many results.", ge=1, le=MAX_K)] = 10,
        where: WhereArg = None,
        mode: ModeArg = "dense",
        fusion: FusionArg = None,
    ) -> dict[str, Any]:
        """Find the documents of a collection that best match a query, best first.

        Returns {"results": [{"id", "score", "text", "metadata"}]}; in dense mode the score
        is the cosine similarity (higher is closer); in bm25/hybrid mode results are
        passages and also carry per-stage "scores".
        """
        col = cols.get(collection)
        if mode == "dense":
            if fusion is not None:
                raise InvalidInputError("fusion applies to mode 'hybrid' only; remove it.")
            return {"results": [_hit(h) for h in col.search(query, k=k, where=where)]}
        passages = col.retrieve(query, k=k, mode=mode, fusion=fusion, where=where)
        return {"results": [_passage(p) for p in passages]}

    @_tool_errors
    def retrieve(
        collection: CollectionArg,
        query: QueryArg,
        k: Annotated[int, Field(description="How many passages.", ge=1, le=MAX_K)] = 8,
        mode: ModeArg = "hybrid",
        fusion: FusionArg = None,
        where: WhereArg = None,
    ) -> dict[str, Any]:
        """Passages that answer a question, with where each came from, for citing.

        Returns {"passages": [{"id", "text", "score", "citation", "metadata": {"source",
        "char_start", "char_end", "heading_path", ...}, "scores"}]}: text is exactly
        source_text[char_start:char_end] for ingested files; cite with "citation".
        """
        col = cols.get(collection)
        passages = col.retrieve(query, k=k, mode=mode, fusion=fusion, where=where)
        return {"passages": [_passage(p) for p in passages]}

    @_tool_errors
    def get(collection: CollectionArg, ids: IdsArg) -> dict[str, Any]:
        """Read stored documents by id, in the order asked; an unknown id is an error."""
        docs = cols.get(collection).get(list(ids))
        return {"documents": [{"id": d.id, "text": d.text, "metadata": d.metadata} for d in docs]}

    server.add_tool(list_collections, annotations=read_only)
    server.add_tool(search, annotations=read_only)
    server.add_tool(retrieve, annotations=read_only)
    server.add_tool(get, annotations=read_only)
    if allow_writes:
        _add_write_tools(server, cols)
    return server


def _add_write_tools(server: Any, cols: Collections | RegistryCollections) -> None:
    from mcp.types import ToolAnnotations

    @_tool_errors
    def add(
        collection: CollectionArg,
        documents: DocsArg,
        create: Annotated[
            bool, Field(description="Create the collection (default model) if it is missing.")
        ] = True,
    ) -> dict[str, Any]:
        """Embed and store new documents, all or nothing; an id that exists is an error
        (use upsert to replace). Ids are generated when none are given."""
        texts, ids, metadata = _documents(documents, id_required=False)
        out = cols.write(
            collection,
            lambda c: c.add(texts, ids=ids, metadata=metadata, progress=False),
            create=create,
        )
        return {"ids": list(out), "count": len(cols.get(collection))}

    @_tool_errors
    def upsert(
        collection: CollectionArg,
        documents: UpsertDocsArg,
    ) -> dict[str, Any]:
        """Insert or replace documents by id (all or nothing); an unchanged text keeps its
        vector, so metadata updates are cheap."""
        texts, ids, metadata = _documents(documents, id_required=True)
        out = cols.write(
            collection, lambda c: c.upsert(texts, ids=ids, metadata=metadata, progress=False)
        )
        return {"ids": list(out), "count": len(cols.get(collection))}

    @_tool_errors
    def delete(
        collection: CollectionArg,
        ids: IdsArg,
        missing_ok: Annotated[
            bool, Field(description="Ignore unknown ids instead of failing.")
        ] = False,
    ) -> dict[str, Any]:
        """Delete documents by id (all or nothing: an unknown id deletes none unless
        missing_ok). Deleted documents are never returned again."""
        n = cols.write(collection, lambda c: c.delete(list(ids), missing_ok=missing_ok))
        return {"deleted": int(n), "count": len(cols.get(collection))}

    writes = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)
    server.add_tool(add, annotations=writes)
    server.add_tool(upsert, annotations=writes)
    server.add_tool(
        delete,
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False),
    )


def run_stdio(
    home: str | os.PathLike[str] | None = None,
    *,
    allow_writes: bool = False,
    opener: Callable[[str], Collection] | None = None,
) -> None:
    """Serve the collections in ``home`` over stdio until the client closes the pipe.

    ``home`` becomes this process's ``EMBEDSEARCH_HOME`` (default: the variable, else
    ``./indexes``), as if the CLI ran there; ``opener`` opens an existing collection by name
    (see :class:`Collections`).
    """
    if home is not None:
        os.environ["EMBEDSEARCH_HOME"] = str(Path(home))
    cols = Collections(opener)
    server = build_server(cols, allow_writes=allow_writes)
    try:
        server.run("stdio")
    finally:
        cols.close()


class _KeyGuard:
    """ASGI wrapper: the MCP endpoint answers only with a valid ``Authorization: Bearer`` key
    (when the HTTP server has keys), like every other route but the health checks."""

    def __init__(self, app: Any, keys: Any) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.keys.enabled:
            auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not self.keys.accepts(token.strip()):
                from starlette.responses import JSONResponse

                body = {
                    "error": {
                        "type": "UnauthorizedError",
                        "message": "Missing or invalid API key: send `Authorization: Bearer "
                        "<key>` with a key from the server's key list.",
                    }
                }
                headers = {"WWW-Authenticate": "Bearer"}
                await JSONResponse(body, 401, headers=headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_endpoint(registry: Any, keys: Any, *, allow_writes: bool = False) -> tuple[Any, Any]:
    """The MCP server over streamable HTTP for ``embedsearch serve --mcp``.

    Returns ``(server, asgi_app)``: route ``asgi_app`` at ``/mcp`` and run the app inside
    ``server.session_manager.run()`` (the FastAPI lifespan does both, see
    :func:`embedsearch.server.create_app`). Stateless JSON responses: every request stands
    alone, so any worker process can answer it. Without API keys (loopback only) the
    endpoint also refuses requests whose ``Host`` or ``Origin`` is not loopback, against DNS
    rebinding from a web page in the user's browser.
    """
    server = build_server(RegistryCollections(registry), allow_writes=allow_writes)
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
    from mcp.server.transport_security import TransportSecuritySettings

    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=not keys.enabled,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    server.streamable_http_app(
        stateless_http=True, json_response=True, transport_security=security
    )  # creates server.session_manager
    return server, _KeyGuard(StreamableHTTPASGIApp(server.session_manager), keys)


__all__ = ["Collections", "RegistryCollections", "build_server", "http_endpoint", "run_stdio"]

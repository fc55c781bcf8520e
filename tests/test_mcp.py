"""``embedsearch mcp`` driven by the MCP SDK's own client over stdio, against real collections.

The server runs as a real subprocess (the ``embedsearch`` command line), as an MCP client
such as Claude Desktop starts it; answers are compared with the Python API's, and errors with
the CLI's own messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import embedsearch

mcp = pytest.importorskip("mcp", reason="the mcp SDK is in the [dev] extra")
from mcp import ClientSession  # noqa: E402
from mcp.client.stdio import StdioServerParameters, stdio_client  # noqa: E402

CLI = "import sys; from embedsearch.cli import main; sys.exit(main())"
READ_TOOLS = {"list_collections", "search", "retrieve", "get"}
WRITE_TOOLS = {"add", "upsert", "delete"}


@pytest.fixture(scope="module")
def mcp_home(tmp_path_factory: pytest.TempPathFactory, encoder: Any, demo_rows: list) -> Path:
    """``demo`` (350 texts with topic/year) and ``guide`` (passages cut from two files)."""
    home = tmp_path_factory.mktemp("mcp-home")
    col = embedsearch.open(home / "demo")
    col.add(
        [r["text"] for r in demo_rows],
        ids=[r["id"] for r in demo_rows],
        metadata=[{"topic": r["topic"], "year": r["year"]} for r in demo_rows],
    )
    col.close()
    guide = embedsearch.open(home / "guide")
    guide.add_documents(
        [
            {"text": "# Logs\n\nRotate the logs with logrotate every night.", "source": "logs.md"},
            {"text": "# Backups\n\nBackups run at two and go to a second disk.", "source": "bk.md"},
        ]
    )
    guide.close()
    return home


def run_client(home: Path, fn: Callable[[ClientSession], Awaitable[Any]], *flags: str) -> Any:
    """Start ``embedsearch mcp --home HOME FLAGS`` and run ``fn`` with an initialised session."""
    env = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    params = StdioServerParameters(
        command=sys.executable, args=["-c", CLI, "mcp", "--home", str(home), *flags], env=env
    )

    async def main() -> Any:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            await s.initialize()
            return await fn(s)

    return anyio.run(main)


def payload(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    data = json.loads(result.content[0].text)
    assert result.structured_content == data  # the same answer, as text and as JSON
    return data


def cli_error(home: Path, *args: str) -> str:
    """The message the CLI prints for the same mistake (``error: ...`` on stderr, exit 2)."""
    proc = subprocess.run(
        [sys.executable, "-c", CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "EMBEDSEARCH_HOME": str(home), "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line.removeprefix("error: ")


def test_read_tools_match_the_python_api(mcp_home: Path, demo_col: Any) -> None:
    async def session(s: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {"tools": (await s.list_tools()).tools}
        out["list"] = await s.call_tool("list_collections", {})
        out["search"] = await s.call_tool(
            "search", {"collection": "demo", "query": "black holes and gravity", "k": 5}
        )
        out["filtered"] = await s.call_tool(
            "search",
            {
                "collection": "demo",
                "query": "songs",
                "k": 4,
                "where": {"topic": "music", "year": {"$gte": 2010}},
            },
        )
        out["hybrid"] = await s.call_tool(
            "search",
            {"collection": "demo", "query": "tomato blight", "mode": "hybrid", "fusion": "rrf"},
        )
        out["retrieve"] = await s.call_tool(
            "retrieve", {"collection": "guide", "query": "when do backups run", "k": 2}
        )
        out["get"] = await s.call_tool("get", {"collection": "demo", "ids": ["music-015"]})
        out["missing"] = await s.call_tool("search", {"collection": "nosuch", "query": "x"})
        out["bad_where"] = await s.call_tool(
            "search", {"collection": "demo", "query": "x", "where": {"year": {"$near": 1}}}
        )
        out["bad_k"] = await s.call_tool("search", {"collection": "demo", "query": "x", "k": 0})
        out["no_write"] = await s.call_tool(
            "add", {"collection": "demo", "documents": [{"text": "x"}]}
        )
        out["after"] = await s.call_tool("list_collections", {})  # still serving
        return out

    got = run_client(mcp_home, session)
    tools = {t.name: t for t in got["tools"]}
    assert set(tools) == READ_TOOLS  # no write tools without --allow-writes
    for t in tools.values():
        assert len(t.description or "") > 40, t.name
        assert t.annotations and t.annotations.read_only_hint
    search_schema = tools["search"].input_schema
    assert search_schema["required"] == ["collection", "query"]
    assert set(search_schema["properties"]["mode"]["enum"]) == {"dense", "bm25", "hybrid"}
    assert "$gte" in search_schema["properties"]["where"]["description"]

    listed = {c["name"]: c for c in payload(got["list"])["collections"]}
    assert listed["demo"]["count"] == 350 and listed["guide"]["count"] == 2

    hits = payload(got["search"])["results"]
    py = demo_col.search("black holes and gravity", k=5)
    assert [h["id"] for h in hits] == [h.id for h in py]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in py], abs=1e-5)
    filtered = payload(got["filtered"])["results"]
    py = demo_col.search("songs", k=4, where={"topic": "music", "year": {"$gte": 2010}})
    assert [h["id"] for h in filtered] == [h.id for h in py] and len(py) == 4
    hybrid = payload(got["hybrid"])["results"]
    py = demo_col.retrieve("tomato blight", k=10, mode="hybrid", fusion="rrf")
    assert [h["id"] for h in hybrid] == [p.id for p in py]

    passages = payload(got["retrieve"])["passages"]
    top = passages[0]
    assert top["metadata"]["source"] == "bk.md"
    start, end = top["metadata"]["char_start"], top["metadata"]["char_end"]
    assert 0 <= start < end and "bk.md" in top["citation"] and f"[{start}:{end}]" in top["citation"]

    (doc,) = payload(got["get"])["documents"]
    assert doc["id"] == "music-015" and doc["metadata"]["topic"] == "music"

    # errors are tool errors carrying the CLI's own words, and the server keeps serving
    for key in ("missing", "bad_where", "bad_k", "no_write"):
        assert got[key].is_error, key
    assert cli_error(mcp_home, "search", "nosuch", "x") in got["missing"].content[0].text
    cli = cli_error(mcp_home, "search", "demo", "x", "--where", '{"year": {"$near": 1}}')
    assert cli in got["bad_where"].content[0].text
    assert "k" in got["bad_k"].content[0].text
    assert "add" in got["no_write"].content[0].text
    assert payload(got["after"])["collections"]


def test_write_tools_with_allow_writes(mcp_home: Path) -> None:
    docs = [
        {"id": "n1", "text": "Remember: the staging database password rotates on Mondays."},
        {"id": "n2", "text": "The user prefers answers in French.", "metadata": {"kind": "pref"}},
    ]

    async def session(s: ClientSession) -> dict[str, Any]:
        out: dict[str, Any] = {"tools": {t.name for t in (await s.list_tools()).tools}}
        out["add"] = await s.call_tool("add", {"collection": "memory", "documents": docs})
        out["dup"] = await s.call_tool("add", {"collection": "memory", "documents": docs[:1]})
        out["search"] = await s.call_tool(
            "search", {"collection": "memory", "query": "which language should I reply in", "k": 1}
        )
        out["upsert"] = await s.call_tool(
            "upsert",
            {
                "collection": "memory",
                "documents": [
                    {"id": "n2", "text": docs[1]["text"], "metadata": {"kind": "pref", "v": 2}}
                ],
            },
        )
        out["get"] = await s.call_tool("get", {"collection": "memory", "ids": ["n2"]})
        out["delete_unknown"] = await s.call_tool(
            "delete", {"collection": "memory", "ids": ["n1", "nope"]}
        )
        out["delete"] = await s.call_tool("delete", {"collection": "memory", "ids": ["n1"]})
        return out

    got = run_client(mcp_home, session, "--allow-writes")
    assert got["tools"] == READ_TOOLS | WRITE_TOOLS
    assert payload(got["add"]) == {"ids": ["n1", "n2"], "count": 2}
    assert got["dup"].is_error and "n1" in got["dup"].content[0].text
    assert payload(got["search"])["results"][0]["id"] == "n2"
    assert payload(got["upsert"])["count"] == 2
    assert payload(got["get"])["documents"][0]["metadata"] == {"kind": "pref", "v": 2}
    assert got["delete_unknown"].is_error and "nope" in got["delete_unknown"].content[0].text
    assert payload(got["delete"]) == {"deleted": 1, "count": 1}
    # committed on disk, and no write lock left behind: the Python API can write at once
    col = embedsearch.open(mcp_home / "memory", create=False)
    try:
        assert col.ids() == ["n2"]
        col.add(["one more"], ids=["n3"])
        assert len(col) == 2
    finally:
        col.close()


def test_streamable_http_under_serve_shares_keys_and_handles(mcp_home: Path) -> None:
    """``create_app(mcp=True)``: the same tools at ``/mcp`` through the SDK's HTTP client,
    behind the server's API key."""
    httpx2 = pytest.importorskip("httpx2", reason="the mcp SDK's HTTP client library")
    from mcp.client.streamable_http import streamable_http_client

    from embedsearch.server import create_app
    from embedsearch.server.runner import ServerThread

    key = "mcp-http-key-0123456789abcdef"
    app = create_app(mcp_home, api_keys=[key], warm=False, mcp=True)

    async def call(url: str, headers: dict[str, str]) -> Any:
        async with (
            httpx2.AsyncClient(headers=headers, timeout=120) as http,
            streamable_http_client(url, http_client=http) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            tools = {t.name for t in (await s.list_tools()).tools}
            found = await s.call_tool("search", {"collection": "demo", "query": "jazz", "k": 3})
            missing = await s.call_tool("get", {"collection": "demo", "ids": ["no-such-id"]})
            return tools, found, missing

    with ServerThread(app) as srv:
        denied = httpx2.post(
            f"{srv.url}/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Accept": "application/json, text/event-stream"},
        )
        assert denied.status_code == 401
        tools, found, missing = anyio.run(
            call, f"{srv.url}/mcp", {"Authorization": f"Bearer {key}"}
        )
        http_hits = httpx2.post(
            f"{srv.url}/collections/demo/search",
            json={"query": "jazz", "k": 3},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["hits"]
    assert tools == READ_TOOLS
    assert [h["id"] for h in payload(found)["results"]] == [h["id"] for h in http_hits]
    assert missing.is_error and "no-such-id" in missing.content[0].text

"""``embedsearch serve``: the HTTP server (FastAPI on uvicorn) over a home of collections."""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the collections over HTTP (OpenAPI UI at /docs)",
        description="Serve every collection under --home over HTTP. Auth: set "
        "EMBEDSEARCH_API_KEY or pass --api-key-file; a host other than loopback needs a key "
        "(or --insecure).",
    )
    p.add_argument(
        "--home", help="directory of collections (default EMBEDSEARCH_HOME or ./indexes)"
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (default 1; more than one reopens a collection for each write)",
    )
    p.add_argument(
        "--api-key-file", help="file of accepted API keys, one per line (# comments allowed)"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback host without an API key (anyone who can reach it can write)",
    )
    p.add_argument(
        "--cors",
        nargs="+",
        metavar="ORIGIN",
        default=[],
        help="origins allowed by CORS, e.g. https://app.example.com ('*' for any); off by default",
    )
    p.add_argument("--max-body-mb", type=float, default=32.0, help="request body limit (MiB)")
    p.add_argument("--max-texts", type=int, default=2048, help="texts/queries/ids per request")
    p.add_argument("--max-text-chars", type=int, default=100_000, help="characters per text")
    p.add_argument("--max-k", type=int, default=1000, help="largest k a request may ask for")
    p.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help="model clients may create collections and embed with (repeatable; default: the "
        "default model)",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="run sharded collections on Ray started at startup: bare --ray starts a local Ray "
        "(or joins RAY_ADDRESS); --ray ADDRESS joins a cluster (auto, HOST:6379, "
        "ray://HOST:10001). Needed with --workers > 1. Default: a local Ray on first use",
    )
    p.add_argument(
        "--mcp",
        action="store_true",
        help="also serve the MCP tools (for AI agents) over streamable HTTP at /mcp, behind "
        "the same API keys (needs the extra 'mcp')",
    )
    p.add_argument(
        "--mcp-allow-writes",
        action="store_true",
        help="with --mcp: offer the add, upsert and delete tools too",
    )
    p.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.set_defaults(func=cmd_serve)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the server to this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_config(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`create_app` keyword arguments from the command line (no keys in it)."""
    return {
        "home": str(Path(args.home).expanduser().resolve()) if args.home else None,
        "cors_origins": list(args.cors or []),
        "limits": {
            "max_body_bytes": int(args.max_body_mb * 1024 * 1024),
            "max_texts": args.max_texts,
            "max_text_chars": args.max_text_chars,
            "max_k": args.max_k,
        },
        "models": args.models,
        "shared_writes": args.workers > 1,
        "ray_address": args.ray or None,
        "mcp": args.mcp,
        "mcp_allow_writes": args.mcp_allow_writes,
    }


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server.auth import keys_from_env
    from ..server.limits import Limits

    if args.workers < 1:
        raise InvalidInputError("--workers must be at least 1.")
    if not 0 < args.port < 65536:
        raise InvalidInputError("--port must be between 1 and 65535.")
    keys = keys_from_env(args.api_key_file)
    if not keys and not is_loopback(args.host) and not args.insecure:
        raise InvalidInputError(
            f"refusing to serve on {args.host} without an API key: anyone who can reach it "
            "could read and change every collection. Set EMBEDSEARCH_API_KEY or pass "
            "--api-key-file, bind 127.0.0.1, or pass --insecure if a proxy in front checks "
            "access."
        )
    config = server_config(args)
    Limits.from_mapping(config["limits"])  # fail on a bad limit before starting workers
    import torch  # noqa: F401 - before faiss: one OpenMP runtime set up first (FINDINGS.md)
    import uvicorn

    from ..server.app import config_to_env, create_app
    from ..server.protocol import UVICORN_OPTIONS

    if not keys:
        print(
            "warning: no API key set: every client that can connect has full access",
            file=sys.stderr,
        )
    common = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "proxy_headers": False,
        "server_header": False,
        **UVICORN_OPTIONS,  # header deadline for slow or idle connections
    }
    from ..validation import home as default_home

    home_dir = config["home"] or str(default_home().expanduser().resolve())
    with _ray_for(args, config):  # before the workers start: they get its address
        sock = bind_socket(args.host, args.port)  # a busy port fails here, before any claim
        announce = (
            f"serving {home_dir} on http://{_url_host(args.host)}:{args.port} (web page at /ui, "
            f"docs at /docs{', MCP at /mcp' if args.mcp else ''}; ready when /readyz says 200; "
            f"auth {'on' if keys else 'off'}; {args.workers} worker(s))"
        )
        if args.workers == 1:
            app = create_app(api_keys=keys, **config)
            server = uvicorn.Server(uvicorn.Config(app, **common))
            print(announce, file=sys.stderr, flush=True)
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: a clean stop (as uvicorn.run)
                server.run(sockets=[sock])
            return 0
        sock.close()  # uvicorn's supervisor binds again for its workers (SO_REUSEADDR)
        if args.api_key_file:
            os.environ["EMBEDSEARCH_API_KEY_FILE"] = str(Path(args.api_key_file).resolve())
        config_to_env(config)
        print(announce, file=sys.stderr, flush=True)
        with _multiprocess_metrics():
            uvicorn.run(
                "embedsearch.server.app:create_app_from_env",
                factory=True,
                workers=args.workers,
                **common,
            )
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` now, so a port in use is a clear error (exit 2)
    instead of a traceback after the server claimed to be serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise InvalidInputError(
                f"port {port} on {host} is already in use (another server?); stop it or pass "
                "--port with a free port."
            ) from exc
        raise InvalidInputError(
            f"cannot listen on {host}:{port} ({exc.strerror}); check --host."
        ) from exc
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _ray_for(args: argparse.Namespace, config: dict[str, Any]) -> Iterator[None]:
    """With ``--ray``: start or join Ray here, before serving, and shut it down after.

    Shard actors then live on that Ray. Worker processes (``--workers N``) join the same
    cluster: they get its GCS address (a ``ray://`` client address is passed on as given).
    Without ``--ray`` nothing starts here; a sharded collection starts a local Ray in the
    server process on first use.
    """
    if args.ray is None:
        yield
        return
    from ..distributed._ray import ray_session

    address = args.ray or None
    with ray_session(address) as ray:  # EmbedSearchError (exit 2) when Ray is missing/unreachable
        if not (address or "").startswith("ray://"):
            config["ray_address"] = ray.get_runtime_context().gcs_address
        print(f"Ray: {config['ray_address'] or 'local'} (sharded collections)", file=sys.stderr)
        yield


@contextlib.contextmanager
def _multiprocess_metrics() -> Iterator[None]:
    """A temporary ``PROMETHEUS_MULTIPROC_DIR`` so that /metrics sums every worker."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="embedsearch-metrics-") as tmp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
        try:
            yield
        finally:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)

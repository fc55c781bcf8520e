"""``embedsearch serve``: refusing unsafe binds, reading keys, and one real server process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from embedsearch.cli import main
from embedsearch.cli.cmd_serve import is_loopback
from embedsearch.server.app import CONFIG_ENV, create_app_from_env
from embedsearch.server.auth import read_key_file
from embedsearch.server.runner import free_port

KEY = "cli-key-0123456789abcdefgh"


@pytest.fixture
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMBEDSEARCH_API_KEY", raising=False)
    monkeypatch.delenv("EMBEDSEARCH_API_KEY_FILE", raising=False)


def test_is_loopback() -> None:
    for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"]:
        assert is_loopback(host), host
    for host in ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.com", "my-laptop"]:
        assert not is_loopback(host), host


def test_refuses_public_host_without_key(
    no_env_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0 without an API key" in err
    assert "--insecure" in err


def test_empty_or_missing_key_file_is_an_error(
    no_env_key: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "keys"
    empty.write_text("# no keys yet\n\n")
    assert main(["serve", "--api-key-file", str(empty), "--home", str(tmp_path)]) == 2
    assert "holds no key" in capsys.readouterr().err
    assert main(["serve", "--api-key-file", str(tmp_path / "nope"), "--home", str(tmp_path)]) == 2
    assert "cannot read API key file" in capsys.readouterr().err


def test_key_file_format(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# service A\n{KEY}\n\n  second-key-abcdefghijkl  \n")
    assert read_key_file(f) == [KEY, "second-key-abcdefghijkl"]


def test_worker_factory_reads_config_and_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env_key: None
) -> None:
    """``--workers N`` starts uvicorn with an import-string factory; it must rebuild the same
    app in each worker from the environment, keys included (never from the config JSON)."""
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    monkeypatch.setenv(
        CONFIG_ENV,
        f'{{"home": "{tmp_path / "home"}", "limits": {{"max_k": 7}}, "shared_writes": true, '
        f'"api_key_file": "{keys}", "warm": false}}',
    )
    app = create_app_from_env()
    assert app.state.keys.enabled and app.state.keys.accepts(KEY)
    assert app.state.server.limits.max_k == 7
    assert app.state.server.registry.shared_writes
    assert app.state.server.registry.home == tmp_path / "home"


def test_serve_process_end_to_end(tmp_path: Path, no_env_key: None) -> None:
    """The real command: starts, answers health without a key, wants the key elsewhere,
    serves a write and a search, and shuts down cleanly on SIGINT."""
    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    keys.chmod(0o600)
    port = free_port()
    exe = [sys.executable, "-c", "import sys; from embedsearch.cli import main; sys.exit(main())"]
    proc = subprocess.Popen(
        [*exe, "serve", "--home", str(tmp_path / "home"), "--port", str(port)]
        + ["--api-key-file", str(keys), "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        deadline = time.monotonic() + 240
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        assert ready is not None and ready.status_code == 200, proc.poll()
        assert httpx.get(f"{url}/collections").status_code == 401
        assert httpx.post(f"{url}/collections", json={"name": "c"}, headers=auth).status_code == 201
        docs = {"documents": [{"id": "a", "text": "a cat on a mat"}, {"id": "b", "text": "bonds"}]}
        r = httpx.post(f"{url}/collections/c/documents", json=docs, headers=auth, timeout=60)
        assert r.status_code == 201
        r = httpx.post(f"{url}/collections/c/search", json={"query": "kitten"}, headers=auth)
        assert r.json()["hits"][0]["id"] == "a"
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0].decode(errors="replace")
    assert proc.returncode == 0, out
    assert "auth on" in out
    # shutdown closed the collection: the write lock is free for the next writer
    import embedsearch

    with embedsearch.open(tmp_path / "home" / "c", create=False) as col:
        col.add(["after the server"], ids=["z"])
        assert len(col) == 3

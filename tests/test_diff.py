"""Diff between versions: rows, topics, centroid, probes, the map; Python, CLI and HTTP."""

from __future__ import annotations

import json

import pytest

import embedsearch
from embedsearch import InvalidInputError

NEW_TOPIC = "astronomy"


@pytest.fixture
def changed(home, encoder, demo_rows):
    """Version 'before': every topic but astronomy. Then: astronomy added, 10 history rows
    deleted, one text and one metadata entry changed."""
    col = embedsearch.open("news")
    rows = [r for r in demo_rows if r["topic"] != NEW_TOPIC]
    col.add(
        [r["text"] for r in rows],
        ids=[r["id"] for r in rows],
        metadata=[{"topic": r["topic"]} for r in rows],
    )
    col.tag("before")
    new = [r for r in demo_rows if r["topic"] == NEW_TOPIC]
    col.add(
        [r["text"] for r in new],
        ids=[r["id"] for r in new],
        metadata=[{"topic": NEW_TOPIC}] * len(new),
    )
    gone = [r["id"] for r in rows if r["topic"] == "history"][:10]
    col.delete(gone)
    col.upsert(
        ["A recipe for slow-cooked beans."], ids=["cooking-001"], metadata=[{"topic": "cooking"}]
    )
    col.upsert([rows[30]["text"]], ids=[rows[30]["id"]], metadata=[{"topic": "edited"}])
    return col, new, gone, rows


def test_diff_reports_rows_topics_centroid_and_probes(changed, tmp_path):
    col, new, gone, rows = changed
    d = col.diff(
        "before",
        probes=["planets and distant galaxies", "a guitar solo"],
        map_path=tmp_path / "m.png",
    )
    assert sorted(d.added) == sorted(r["id"] for r in new)
    assert sorted(d.removed) == sorted(gone)
    assert d.changed_text == ["cooking-001"]
    assert d.changed_metadata == [rows[30]["id"]]
    assert d.count_a == len(rows) and d.count_b == len(rows) + len(new) - len(gone)
    # the new topic is found, labelled with its own words, sized like what was added
    appeared = [t for t in d.topics if t.change == "appeared"]
    assert appeared, [t.to_dict() for t in d.topics]
    top = max(appeared, key=lambda t: t.size_b)
    assert top.size_a <= top.size_b // 4 and 15 <= top.size_b <= 35 and top.added >= 15
    words = " ".join(top.keywords + top.examples).lower()
    assert any(w in words for w in ("star", "galax", "planet", "telescope", "moon", "orbit"))
    assert 0 < d.centroid_shift < 0.2
    # probes: the astronomy query's results changed a lot; the music one hardly
    space, music = d.probes
    assert space.changed and space.overlap <= 0.5 and set(space.entered) <= set(d.added)
    assert music.overlap >= 0.8
    # the same answer from the other direction (b -> a): added and removed swap
    back = col.diff(col.version, "before")
    assert sorted(back.added) == sorted(gone) and sorted(back.removed) == sorted(d.added)
    assert any(t.change == "vanished" for t in back.topics)
    out = json.loads(json.dumps(d.to_dict()))
    assert out["added"] == len(new) and out["topics"] and out["map"]["format"] == "png"
    assert (tmp_path / "m.png").stat().st_size > 20_000
    assert "appeared" in d.summary()
    assert d.to_dict(max_ids=3)["ids_truncated"] is True
    html = col.diff("before", map_path=tmp_path / "m.html").map
    page = (tmp_path / "m.html").read_text()
    assert html["format"] == "html" and "data:image/png;base64," in page and "appeared" in page


def test_diff_bad_arguments(changed, tmp_path):
    col = changed[0]
    with pytest.raises(InvalidInputError, match="no tag"):
        col.diff("nope")
    with pytest.raises(InvalidInputError, match=r"\.png or \.html"):
        col.diff("before", map_path=tmp_path / "m.gif")
    with pytest.raises(InvalidInputError, match="probes"):
        col.diff("before", probes=[""])
    same = col.diff(-1)
    assert not same.added and not same.removed and not same.changed
    assert all(t.change == "steady" for t in same.topics)
    assert same.centroid_shift == pytest.approx(0, abs=1e-6)


def test_diff_cli_and_http(changed, home, capsys):
    import httpx

    from embedsearch.cli import main
    from embedsearch.server import create_app
    from embedsearch.server.runner import ServerThread

    col = changed[0]
    col.close()
    assert main(["diff", "news", "before", "--probe", "planets and galaxies", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert cli["from"] == 2 and cli["added"] == 25 and cli["probes"][0]["changed"]
    assert main(["diff", "news", "before"]) == 0
    assert "appeared" in capsys.readouterr().out
    app = create_app(home, api_keys=[], write_wait_s=0.2)
    with ServerThread(app) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        r = c.get(
            "/collections/news/diff", params={"from": "before", "probe": ["planets and galaxies"]}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["added_ids"] == cli["added_ids"] and body["topics"] == cli["topics"]
        assert body["probes"][0]["overlap"] == cli["probes"][0]["overlap"]
        assert c.get("/collections/news/diff", params={"from": "nope"}).status_code == 422
        assert c.get("/collections/news/diff").status_code == 422  # from is required
        assert "/collections/{name}/diff" in c.get("/openapi.json").json()["paths"]

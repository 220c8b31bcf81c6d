"""`POST /v1/fanout` over plain HTTP (httpx, the client the openai package uses)."""

import json

import httpx


def can(fake_upstream, model, reply="", directives=""):
    r = httpx.post(f"{fake_upstream}/_fake/canned", json={"model": model, "reply": reply, "directives": directives})
    r.raise_for_status()


def models(fake_upstream):
    can(fake_upstream, "py-fan-a", "Alpha answers.")
    can(fake_upstream, "acme/py-fan-b", "Beta answers.")
    can(fake_upstream, "py-fan-limited", directives="#fault=429")
    return ["ollama/py-fan-a", "openrouter/acme/py-fan-b", "ollama/py-fan-limited"]


def test_fanout_non_stream(proxy_url, fake_upstream):
    body = {"models": models(fake_upstream), "messages": [{"role": "user", "content": "hi"}]}
    r = httpx.post(f"{proxy_url}/v1/fanout", json=body, timeout=30)
    assert r.status_code == 200
    data = r.json()
    assert (data["succeeded"], data["failed"]) == (2, 1)
    answers = data["answers"]
    assert [a["content"] for a in answers[:2]] == ["Alpha answers.", "Beta answers."]
    assert [a["provider"] for a in answers[:2]] == ["ollama", "openrouter"]
    assert answers[2]["error"]["status"] == 429


def test_fanout_stream(proxy_url, fake_upstream):
    body = {"models": models(fake_upstream), "messages": [{"role": "user", "content": "hi"}], "stream": True}
    events = []
    with httpx.stream("POST", f"{proxy_url}/v1/fanout", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[len("data: "):])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    text = {}
    ends = {}
    for e in parsed:
        if e["type"] == "chunk":
            for choice in e["chunk"]["choices"]:
                text[e["model"]] = text.get(e["model"], "") + (choice["delta"].get("content") or "")
        else:
            assert e["model"] not in ends, "one terminal event per model"
            ends[e["model"]] = e["type"]
    assert text["ollama/py-fan-a"] == "Alpha answers."
    assert text["openrouter/acme/py-fan-b"] == "Beta answers."
    assert ends == {"ollama/py-fan-a": "done", "openrouter/acme/py-fan-b": "done", "ollama/py-fan-limited": "error"}


def test_scrum_cli_writes_the_report(fake_upstream, tmp_path):
    import pathlib
    import subprocess

    from conftest import BIN_DIR

    can(fake_upstream, "py-rev-a", '```json\n{"findings": [{"file": "src/x.rs", "line": 3, "severity": "BLOCK", "title": "Panics on empty input"}]}\n```')
    can(fake_upstream, "py-rev-b", '[{"file": "b/src/x.rs", "line": 4, "severity": "high", "title": "Empty input panics"}] done')
    can(fake_upstream, "py-rev-c", "no JSON here")
    config = tmp_path / "lakehouse.toml"
    config.write_text(f'[providers.ollama]\nbase_url = "{fake_upstream}/ollama"\n[store]\nbackend = "local"\nroot = "{tmp_path}/data"\n')
    diff = tmp_path / "change.diff"
    diff.write_text("diff --git a/src/x.rs b/src/x.rs\n--- a/src/x.rs\n+++ b/src/x.rs\n@@ -1 +1,4 @@\n+fn f(v: &[u8]) -> u8 {\n+    v[0]\n+}\n")
    out = subprocess.run(
        [str(BIN_DIR / "lakehouse"), "scrum", str(diff), "--label", "py-review", "--config", str(config),
         "--models", "ollama/py-rev-a,ollama/py-rev-b,ollama/py-rev-c", "--out", str(tmp_path / "reports")],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = pathlib.Path(out.stdout.strip())
    assert report.parent.parent == tmp_path / "reports" and report.name == "py-review"
    summary = json.loads((report / "summary.json").read_text())
    assert [v["status"] for v in summary["verdicts"]] == ["parsed", "parsed", "unparsed"]
    assert len(summary["groups"]) == 1
    assert summary["groups"][0]["models"] == ["ollama/py-rev-a", "ollama/py-rev-b"]
    assert "| 1 | BLOCK | 2/2 |" in (report / "disposition.md").read_text()
    assert sorted(p.name for p in (report / "verdicts").iterdir()) == [
        "ollama_py-rev-a.json", "ollama_py-rev-b.json", "ollama_py-rev-c.json"]

"""The `lakehouse` binary as an operator uses it: help, `chat`, `doctor`,
JSON logs with request ids, and the refusal to expose an open admin API."""

import json
import os
import socket
import subprocess

import httpx

from conftest import BIN_DIR, TEST_KEY, write_config

LAKEHOUSE = str(BIN_DIR / "lakehouse")


def run(*args, timeout=60, **kwargs):
    return subprocess.run([LAKEHOUSE, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_explains_every_command_with_examples():
    top = run("--help")
    assert top.returncode == 0
    for command in ["serve", "chat", "ingest", "corpora", "query", "scrum", "doctor", "memory"]:
        assert f"\n  {command}" in top.stdout, command
    assert "Examples:" in top.stdout
    for command in ["serve", "chat", "ingest", "query", "scrum", "doctor"]:
        sub = run(command, "--help")
        assert sub.returncode == 0, command
        assert "Example" in sub.stdout, command


def test_chat_streams_to_the_terminal(proxy_url, fake_upstream):
    httpx.post(f"{fake_upstream}/_fake/canned", json={"model": "cli-model", "reply": "Streamed to you."}).raise_for_status()
    out = run("chat", "kimi/cli-model", "hello", "--url", proxy_url)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "Streamed to you.\n"
    assert "tokens in" in out.stderr

    quiet = run("chat", "kimi/cli-model", "-", "--url", proxy_url, "--quiet", input="from stdin")
    assert quiet.returncode == 0 and quiet.stdout == "Streamed to you.\n" and quiet.stderr == ""


def test_chat_errors_say_what_to_do(proxy_url):
    unknown = run("chat", "tier/frontier_arch", "hi", "--url", proxy_url)
    assert unknown.returncode == 1
    assert "404" in unknown.stderr and "/v1/models" in unknown.stderr

    down = run("chat", "kimi/x", "hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "is `lakehouse serve` running?" in down.stderr


def test_refuses_an_open_admin_api_off_loopback(tmp_path, fake_upstream):
    config = write_config(tmp_path, fake_upstream)
    out = run("serve", "--config", str(config), "--listen", "0.0.0.0:0", timeout=60)
    assert out.returncode == 1
    assert "refusing to serve on 0.0.0.0:0" in out.stderr
    assert "[[auth.tokens]]" in out.stderr and "127.0.0.1" in out.stderr


def test_json_logs_carry_the_request_id(tmp_path, fake_upstream):
    config = write_config(tmp_path, fake_upstream)
    proc = subprocess.Popen(
        [LAKEHOUSE, "serve", "--config", str(config), "--listen", "127.0.0.1:0", "--log-format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = proc.stdout.readline().strip().split("listening on ", 1)[1]
        r = httpx.get(f"{url}/v1/chat/providers", headers={"x-request-id": "py-log-check"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "py-log-check"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=40)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [l for l in lines if l.get("target") == "lakehouse::access"]
    assert access, stderr
    line = access[0]
    assert line["span"]["request_id"] == "py-log-check"
    assert line["span"]["route"] == "/v1/chat/providers"
    assert line["fields"]["status"] == 200


def test_doctor_passes_a_good_deployment(tmp_path, fake_upstream):
    config = write_config(tmp_path, fake_upstream)
    out = run("doctor", "--config", str(config), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2] for line in out.stdout.splitlines()
            if line.startswith(("provider ", "key "))}
    for provider in ["ollama", "ollama_cloud", "openrouter", "opencode", "kimi"]:
        assert rows[f"provider {provider}"] == "ok", out.stdout
    assert any(line.startswith("store") and " ok " in line for line in out.stdout.splitlines())
    assert any(line.startswith("embedder") and "384 dimensions" in line for line in out.stdout.splitlines())
    assert "0 failed" in out.stdout


def test_doctor_fails_with_fixes(tmp_path, fake_upstream):
    dead = f"http://127.0.0.1:{free_port()}"
    config = write_config(
        tmp_path, fake_upstream,
        f'[[providers.custom]]\nname = "gone"\nbase_url = "{dead}/v1"\nkey_file = "secrets/gone.env"\n'
        f'[[providers.custom]]\nname = "leaky"\nbase_url = "{fake_upstream}/openai/v1"\nkey_file = "secrets/leaky.env"\n',
    )
    good = tmp_path / "secrets" / "gone.env"
    good.write_text(f"GONE_API_KEY={TEST_KEY}\n")
    good.chmod(0o600)
    leaky = tmp_path / "secrets" / "leaky.env"
    leaky.write_text(f"LEAKY_API_KEY={TEST_KEY}\n")
    leaky.chmod(0o644)
    out = run("doctor", "--config", str(config), timeout=120)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    # A readable key file is a failure with its fix; the provider is not registered.
    assert any(l.startswith("key leaky") and "FAIL" in l for l in lines), out.stdout
    assert f"chmod 600 {leaky}" in out.stdout
    # A registered provider that cannot be reached fails and names the setting to check.
    gone = [l for l in lines if l.startswith("provider gone")]
    assert gone and "FAIL" in gone[0], out.stdout
    assert "providers.gone.base_url" in out.stdout
    assert "some checks failed" in out.stderr

    broken = tmp_path / "broken.toml"
    broken.write_text("[server]\nlisten_port = 3\n")
    out = run("doctor", "--config", str(broken))
    assert out.returncode == 1 and "listen_port" in out.stdout


def test_a_failed_ingest_leaves_no_corpus_behind_and_flags_must_match(tmp_path, fake_upstream):
    config = str(write_config(tmp_path, fake_upstream))
    notes = tmp_path / "notes.csv"
    notes.write_text("id,body\n1,meeting notes about the budget\n")

    wrong = run("ingest", str(notes), "--corpus", "notes", "--text-column", "text", "--config", config)
    assert wrong.returncode != 0
    assert 'column "text" is not in the file' in wrong.stderr, wrong.stderr
    listed = run("corpora", "--config", config)
    assert "notes" not in listed.stdout, "the corpus the failed run created is gone"

    right = run("ingest", str(notes), "--corpus", "notes", "--text-column", "body", "--config", config)
    assert right.returncode == 0, right.stderr
    assert "ingested 1 rows into notes" in right.stdout

    more = tmp_path / "more.csv"
    more.write_text("id,body\n2,a recipe for pancakes\n")
    other = run("ingest", str(more), "--corpus", "notes", "--text-column", "title", "--config", config)
    assert other.returncode != 0
    assert 'exists with text columns ["body"]' in other.stderr, other.stderr
    same = run("ingest", str(more), "--corpus", "notes", "--config", config)
    assert same.returncode == 0, same.stderr
    assert "version 2" in same.stdout

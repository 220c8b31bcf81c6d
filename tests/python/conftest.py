"""Starts the real `fake-upstream` and `lakehouse serve` binaries on port 0 for the client tests."""

import os
import pathlib
import subprocess
import tempfile

import pytest

BIN_DIR = pathlib.Path(os.environ.get("LAKEHOUSE_BIN_DIR", pathlib.Path.home() / ".cache/lakehouse/target/release"))
TEST_KEY = "sk-python-test-key"


def _start(args, env=None):
    """Starts a binary that prints one `... listening on http://ADDR` line; returns (process, base URL)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    if "listening on " not in line:
        proc.kill()
        raise RuntimeError(f"{args[0]} did not start: {line!r}")
    return proc, line.strip().split("listening on ", 1)[1]


@pytest.fixture(scope="session")
def fake_upstream():
    proc, url = _start([str(BIN_DIR / "fake-upstream"), "--listen", "127.0.0.1:0"])
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def write_config(tmp, fake_upstream, extra_toml=""):
    """Writes key files and a config with every provider pointed at the fake and
    a store under `tmp`; returns the config's path."""
    secrets = tmp / "secrets"
    secrets.mkdir(exist_ok=True)
    for name, var in [
        ("ollama_cloud", "OLLAMA_CLOUD_KEY"),
        ("openrouter", "OPENROUTER_API_KEY"),
        ("opencode", "OPENCODE_API_KEY"),
        ("kimi", "KIMI_API_KEY"),
    ]:
        path = secrets / f"{name}.env"
        path.write_text(f"{var}={TEST_KEY}\n")
        path.chmod(0o600)
    config = tmp / "lakehouse.toml"
    config.write_text(
        f"""
secrets_dir = "secrets"
[store]
backend = "local"
root = "{tmp / 'data'}"
[providers.ollama]
base_url = "{fake_upstream}/ollama"
[providers.ollama_cloud]
base_url = "{fake_upstream}/ollama_cloud"
[providers.openrouter]
base_url = "{fake_upstream}/openrouter/api/v1"
[providers.opencode]
base_url = "{fake_upstream}/zen/v1"
[providers.kimi]
base_url = "{fake_upstream}/kimi/v1"
{extra_toml}
"""
    )
    return config


def start_lakehouse(fake_upstream, extra_toml=""):
    """Starts `lakehouse serve` on port 0 with a fresh store (see `write_config`);
    returns (process, base URL)."""
    config = write_config(pathlib.Path(tempfile.mkdtemp(prefix="lakehouse-py-")), fake_upstream, extra_toml)
    return _start([str(BIN_DIR / "lakehouse"), "serve", "--config", str(config), "--listen", "127.0.0.1:0"])


def stop(proc):
    proc.terminate()
    proc.wait(timeout=40)


@pytest.fixture(scope="session")
def proxy_url(fake_upstream):
    # One worker (with its busy polling) here; the other suites' servers run
    # the default, one worker per core.
    proc, url = start_lakehouse(
        fake_upstream,
        """
[server]
worker_threads = 1
[models]
local_fast = "ollama/qwen3:8b"
[plugins.matrix]
min_similarity = -1.0
[[rag_models]]
name = "rag/docs"
model = "kimi/kimi-k2.6"
corpora = ["pydocs"]
k = 2
plugins = ["matrix", "playbook"]
""",
    )
    yield url
    stop(proc)

"""A store that turns read-only under a running server: writes fail with a
clear OpenAI-shaped error, reads (search, SQL, memory, rag chats) go on.

Root ignores permission bits, so the store is frozen with `chattr +i`
(immutable: no new, renamed or deleted files, even for root); as another
user, `chmod a-w` does the same.
"""

import json
import os
import pathlib
import shutil
import subprocess

import httpx
import pytest

from conftest import start_lakehouse, stop


def freeze(root, frozen):
    if os.geteuid() == 0:
        if not shutil.which("chattr"):
            pytest.fail("the read-only store test runs as root and needs chattr (Debian: e2fsprogs)")
        subprocess.run(["chattr", "-R", "+i" if frozen else "-i", str(root)], check=True)
    else:
        mode = "a-w" if frozen else "u+w"
        subprocess.run(["chmod", "-R", mode, str(root)], check=True)


def test_a_read_only_store_refuses_writes_and_serves_reads(fake_upstream):
    proc, url = start_lakehouse(
        fake_upstream,
        """
[plugins.matrix]
min_similarity = -1.0
[[rag_models]]
name = "rag/ro"
model = "kimi/kimi-k2.6"
corpora = ["runbooks"]
k = 2
""",
    )
    root = pathlib.Path(proc.args[proc.args.index("--config") + 1]).parent / "data"
    try:
        r = httpx.post(f"{url}/admin/corpora", json={"name": "runbooks", "text_columns": ["text"]})
        assert r.status_code == 201
        docs = "".join(json.dumps({"id": f"r{i}", "text": f"runbook {i}: restart the queue worker"}) + "\n" for i in range(5))
        r = httpx.post(f"{url}/admin/corpora/runbooks/ingest?format=jsonl", content=docs, timeout=60)
        assert r.status_code == 200, r.text
        trace = httpx.post(f"{url}/admin/memory/traces", json={"namespace": "ro", "text": "the queue lives on host q1"}).json()

        freeze(root, True)
        try:
            # Writes: a clear 503 in OpenAI's shape, nothing half-written.
            more = json.dumps({"id": "r9", "text": "new runbook"}) + "\n"
            for method, path, kwargs in [
                ("POST", "/admin/corpora/runbooks/ingest?format=jsonl", {"content": more}),
                ("PUT", "/admin/objects/notes/a.txt", {"content": b"hello"}),
                ("POST", "/admin/memory/traces", {"json": {"namespace": "ro", "text": "another"}}),
                ("POST", "/admin/corpora", {"json": {"name": "fresh", "text_columns": ["text"]}}),
            ]:
                r = httpx.request(method, f"{url}{path}", timeout=60, **kwargs)
                assert r.status_code == 503, (path, r.status_code, r.text)
                error = r.json()["error"]
                assert error["code"] == "store_unavailable", error
                assert error["message"], error

            # Reads go on.
            corpus = httpx.get(f"{url}/admin/corpora/runbooks").json()
            assert corpus["rows"] == 5
            hits = httpx.post(f"{url}/admin/corpora/runbooks/search", json={"query": "queue worker", "k": 3}).json()
            assert len(hits["data"]) == 3
            r = httpx.post(f"{url}/admin/query", json={"sql": "SELECT count(*) FROM runbooks"})
            assert r.status_code == 200, r.text
            found = httpx.post(f"{url}/admin/memory/search", json={"namespace": "ro", "query": "where is the queue"}).json()
            assert found["data"][0]["trace"]["id"] == trace["id"]
            chat = httpx.post(f"{url}/v1/chat/completions",
                              json={"model": "rag/ro", "messages": [{"role": "user", "content": "how do I restart the queue?"}]},
                              timeout=60)
            assert chat.status_code == 200, chat.text
            assert len(chat.json()["lakehouse"]["sources"]) == 2
        finally:
            freeze(root, False)

        # Writable again: writes work, and nothing from the refused ones is visible.
        r = httpx.post(f"{url}/admin/corpora/runbooks/ingest?format=jsonl", content=more, timeout=60)
        assert r.status_code == 200, r.text
        assert httpx.get(f"{url}/admin/corpora/runbooks").json()["rows"] == 6
        assert httpx.get(f"{url}/admin/corpora/fresh").status_code == 404
    finally:
        stop(proc)

"""The MCP tools through the official `mcp` Python client: streamable HTTP at
/mcp on a running server, and `lakehouse mcp` over stdio."""

import asyncio
import json

import httpx
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from conftest import BIN_DIR, start_lakehouse, stop

TOOLS = {"list_corpora", "search_corpus", "sql_query", "memory_search", "memory_add", "chat"}
DOCS = [
    {"id": "restart", "text": "To restart the queue worker run systemctl restart worker."},
    {"id": "backup", "text": "Backups run nightly with restic."},
    {"id": "certs", "text": "TLS certificates renew automatically every sixty days."},
]


def payload(result):
    assert not result.isError, result.content
    return json.loads(result.content[0].text)


@pytest.fixture(scope="module")
def mcp_server(fake_upstream):
    httpx.post(f"{fake_upstream}/_fake/canned", json={"model": "mcp-model", "reply": "Use systemctl [1]."}).raise_for_status()
    proc, url = start_lakehouse(
        fake_upstream,
        """
[plugins.matrix]
min_similarity = -1.0
[[rag_models]]
name = "rag/ops"
model = "kimi/mcp-model"
corpora = ["ops"]
k = 2
""",
    )
    r = httpx.post(f"{url}/admin/corpora", json={"name": "ops", "text_columns": ["text"]})
    assert r.status_code == 201
    r = httpx.post(f"{url}/admin/corpora/ops/ingest?format=jsonl", content="".join(json.dumps(d) + "\n" for d in DOCS), timeout=60)
    assert r.status_code == 200, r.text
    yield proc, url
    stop(proc)


async def exercise(session):
    await session.initialize()
    tools = await session.list_tools()
    assert {t.name for t in tools.tools} == TOOLS
    search = next(t for t in tools.tools if t.name == "search_corpus")
    assert search.inputSchema["required"] == ["corpus", "query"]

    corpora = payload(await session.call_tool("list_corpora", {}))
    assert [c["name"] for c in corpora] == ["ops"] and corpora[0]["rows"] == 3

    hits = payload(await session.call_tool("search_corpus", {"corpus": "ops", "query": "how do I restart the worker", "k": 2}))
    assert hits[0]["id"] == "restart" and len(hits) == 2
    assert {"score", "boost", "final_score"} <= hits[0].keys()

    rows = payload(await session.call_tool("sql_query", {"sql": "SELECT count(*) AS n FROM ops"}))
    assert rows["rows"] == [{"n": 3}]

    refused = await session.call_tool("sql_query", {"sql": "DROP TABLE ops"})
    assert refused.isError and "read-only" in refused.content[0].text

    added = payload(await session.call_tool("memory_add", {"namespace": "mcp", "text": "The worker runs on host w3."}))
    found = payload(await session.call_tool("memory_search", {"namespace": "mcp", "query": "which host runs the worker"}))
    assert found[0]["trace"]["id"] == added["id"]

    answer = payload(await session.call_tool("chat", {"model": "rag/ops", "prompt": "How do I restart the worker?"}))
    assert answer["content"] == "Use systemctl [1]." and answer["provider"] == "kimi"
    assert answer["sources"][0]["id"] == "restart"

    with pytest.raises(McpError):
        await session.call_tool("sql_query", {"query": "SELECT 1"})  # wrong argument name
    with pytest.raises(McpError):
        await session.call_tool("no_such_tool", {})


def test_mcp_over_streamable_http(mcp_server):
    _, url = mcp_server

    async def run():
        async with streamable_http_client(f"{url}/mcp") as (read, write, _):
            async with ClientSession(read, write) as session:
                await exercise(session)

    asyncio.run(run())


def test_mcp_over_stdio(mcp_server):
    proc, _ = mcp_server
    config = proc.args[proc.args.index("--config") + 1]
    # A second process on the same store, as an MCP client would launch it.
    params = StdioServerParameters(command=str(BIN_DIR / "lakehouse"), args=["mcp", "--config", config])

    async def run():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                assert {t.name for t in tools.tools} == TOOLS
                rows = payload(await session.call_tool("sql_query", {"sql": "SELECT id FROM ops ORDER BY id"}))
                assert [r["id"] for r in rows["rows"]] == ["backup", "certs", "restart"]

    asyncio.run(run())


def test_mcp_needs_an_admin_token_when_auth_is_on(fake_upstream):
    import hashlib

    admin = "admin-token-for-mcp-0001"
    client = "client-token-for-mcp-0001"
    proc, url = start_lakehouse(
        fake_upstream,
        f"""
[[auth.tokens]]
name = "ops"
scope = "admin"
sha256 = "{hashlib.sha256(admin.encode()).hexdigest()}"
[[auth.tokens]]
name = "app"
scope = "client"
sha256 = "{hashlib.sha256(client.encode()).hexdigest()}"
""",
    )
    try:
        body = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
        headers = {"accept": "application/json, text/event-stream"}
        assert httpx.post(f"{url}/mcp", json=body, headers=headers).status_code == 401
        r = httpx.post(f"{url}/mcp", json=body, headers={**headers, "authorization": f"Bearer {client}"})
        assert r.status_code == 403
        r = httpx.post(f"{url}/mcp", json=body, headers={**headers, "authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
    finally:
        stop(proc)

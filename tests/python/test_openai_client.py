"""The official `openai` Python package against the real `lakehouse` binary."""

import json
import urllib.error
import urllib.request

import httpx
import openai
import pytest

# (model, the name the fake upstream answers with)
MODELS = [
    ("ollama/qwen3:8b", "ollama"),
    ("gpt-oss:120b-cloud", "ollama_cloud"),
    ("openrouter/openai/gpt-4o-mini", "openrouter"),
    ("kimi/kimi-k2.6", "kimi"),
    ("opencode/big-pickle", "zen"),
    ("opencode/claude-sonnet-4-5", "zen"),
    ("opencode/gpt-5.4", "zen"),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def client(proxy_url):
    return openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.mark.parametrize("model,flavour", MODELS)
def test_chat(client, model, flavour):
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi there"}])
    assert reply.choices[0].message.content == f"Hello from {flavour}! You said: hi there"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == model
    assert reply.usage.prompt_tokens == 11
    assert reply.usage.total_tokens == 18


@pytest.mark.parametrize("model,flavour", MODELS)
def test_streaming_with_usage(client, model, flavour):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from {flavour}! You said: hi there"
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == 18
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


@pytest.mark.parametrize("model,flavour", MODELS)
def test_streamed_tool_calls(client, model, flavour):
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather in Oslo? #tool"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls = {}
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            slot = calls.setdefault(call.index, {"id": None, "name": "", "arguments": ""})
            if call.id:
                slot["id"] = call.id
            if call.function and call.function.name:
                slot["name"] += call.function.name
            if call.function and call.function.arguments:
                slot["arguments"] += call.function.arguments
        finish = choice.finish_reason or finish
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert finish == "tool_calls"


def answer_the_call(client, model, question, reply, result, tools):
    """Sends the SDK's own reply message back with its first call's result, then "thanks"."""
    call = reply.choices[0].message.tool_calls[0]
    return client.chat.completions.create(
        model=model,
        messages=[
            {"role": "user", "content": question},
            reply.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": result},
            {"role": "user", "content": "thanks"},
        ],
        tools=tools,
    )


def test_tool_round_trip_non_stream(client):
    reply = client.chat.completions.create(
        model="opencode/claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather in Oslo? #tool"}],
        tools=[WEATHER_TOOL],
    )
    call = reply.choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    follow_up = answer_the_call(client, "opencode/claude-sonnet-4-5", "weather in Oslo?", reply, "12C", [WEATHER_TOOL])
    assert follow_up.choices[0].message.content == "Hello from zen! You said: thanks"


@pytest.mark.parametrize("model", ["opencode/gpt-5.4", "openrouter/openai/gpt-5"])
def test_custom_tool_round_trip_through_the_sdk(client, model):
    """A `custom` tool (free-text input) named by `tool_choice`: the SDK reads
    the call as its custom tool call type, and the message it returns goes
    back with the result (as `custom_tool_call` items on the Responses API)."""
    patch_tool = {"type": "custom", "custom": {"name": "apply_patch", "description": "Edits files"}}
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "patch it #tool"}],
        tools=[patch_tool],
        tool_choice={"type": "custom", "custom": {"name": "apply_patch"}},
    )
    call = reply.choices[0].message.tool_calls[0]
    assert call.type == "custom"
    assert (call.custom.name, call.custom.input) == ("apply_patch", "city = Oslo\n")
    assert reply.choices[0].finish_reason == "tool_calls"
    follow_up = answer_the_call(client, model, "patch it", reply, "applied", [patch_tool])
    assert follow_up.choices[0].message.content.endswith("You said: thanks")


def test_claude_thinking_round_trips_through_the_sdk_message(client, fake_upstream):
    """The SDK keeps `reasoning_details` on the message it returns; sending
    that message back gives Claude its signed thinking, as a tool loop with
    thinking on requires."""
    thinking = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
    reply = client.chat.completions.create(
        model="opencode/claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather in Oslo? #think #tool"}],
        tools=[WEATHER_TOOL],
        extra_body=thinking,
    )
    message = reply.choices[0].message
    assert message.model_extra["reasoning_details"][0]["signature"] == "fake-signature"
    call = message.tool_calls[0]
    client.chat.completions.create(
        model="opencode/claude-sonnet-4-5",
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "12C"},
        ],
        tools=[WEATHER_TOOL],
        extra_body=thinking,
    )
    sent = [r for r in httpx.get(f"{fake_upstream}/_fake/requests").json() if r["path"].endswith("/messages")][-1]
    first = sent["body"]["messages"][1]["content"][0]
    assert first == {"type": "thinking", "thinking": "Let me think.", "signature": "fake-signature"}


def test_models_list(client):
    ids = {m.id for m in client.models.list()}
    assert "ollama/qwen3:8b" in ids
    assert "kimi/kimi-k2.6" in ids
    assert "tier/local_fast" in ids
    assert any(i.startswith("openrouter/") for i in ids)


def test_models_retrieve_answers_listed_models_and_404s_the_rest(client):
    # The SDK sends ids with slashes as they are; encoded ones work too.
    for model_id in ["ollama/qwen3:8b", "tier/local_fast", "kimi/kimi-k2.6"]:
        model = client.models.retrieve(model_id)
        assert (model.id, model.object) == (model_id, "model")
    assert client.models.retrieve("ollama/qwen3:8b").owned_by == "ollama"
    encoded = httpx.get(f"{client.base_url}models/ollama%2Fqwen3:8b", headers={"authorization": f"Bearer {client.api_key}"})
    assert encoded.status_code == 200 and encoded.json()["id"] == "ollama/qwen3:8b"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("ollama/no-such-model")
    assert err.value.body["code"] == "model_not_found"


def test_rate_limit_is_a_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="kimi/kimi-k2.6", messages=[{"role": "user", "content": "x #fault=429"}])
    assert err.value.response.headers["retry-after"] == "7"


def test_unknown_provider_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tier/frontier_arch", messages=[{"role": "user", "content": "x"}])


def test_mid_stream_error_raises(client):
    stream = client.chat.completions.create(
        model="openrouter/openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "x #fault=midstream"}],
        stream=True,
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_reasoning_content_is_readable(client):
    reply = client.chat.completions.create(model="kimi/kimi-k2.6", messages=[{"role": "user", "content": "hi #think"}])
    assert reply.choices[0].message.model_extra.get("reasoning_content") == "Let me think."


def test_embeddings_float_and_default_base64(client):
    import array

    floats = client.embeddings.create(model="local", input=["hello world", "goodbye"], encoding_format="float")
    assert len(floats.data) == 2
    assert len(floats.data[0].embedding) == 384
    # The SDK asks for base64 by default and decodes little-endian f32 itself.
    default = client.embeddings.create(model="local", input="hello world")
    assert len(default.data[0].embedding) == 384
    assert default.data[0].embedding == array.array("f", floats.data[0].embedding).tolist()
    norm = sum(x * x for x in default.data[0].embedding)
    assert abs(norm - 1.0) < 1e-3


PYDOCS = "\n".join(
    json.dumps(row)
    for row in [
        {"id": "tea", "text": "Green tea is brewed with water at about 80 degrees Celsius for two minutes."},
        {"id": "moon", "text": "The Moon orbits the Earth roughly every 27 days."},
        {"id": "bread", "text": "Sourdough bread rises with a culture of wild yeast and lactic acid bacteria."},
    ]
)


def post(url, body, content_type="application/json"):
    """POSTs to the admin API with the standard library; returns (status, parsed JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def pydocs(proxy_url):
    """The `pydocs` corpus behind `rag/docs`, created and ingested over the admin API."""
    status, created = post(f"{proxy_url}/admin/corpora", {"name": "pydocs", "text_columns": ["text"]})
    assert status in (201, 200), created
    status, ingested = post(
        f"{proxy_url}/admin/corpora/pydocs/ingest?format=jsonl", PYDOCS.encode(), "application/x-ndjson"
    )
    assert status == 200, ingested
    return proxy_url


def test_rag_model_with_extra_body_returns_sources(client, pydocs):
    question = "How hot should the water be for green tea?"
    reply = client.chat.completions.create(
        model="rag/docs",
        messages=[{"role": "user", "content": question}],
        extra_body={"lakehouse": {"k": 1}},
    )
    assert reply.model == "rag/docs"
    assert reply.choices[0].message.content == f"Hello from kimi! You said: {question}"
    lakehouse = reply.model_extra["lakehouse"]
    assert [s["id"] for s in lakehouse["sources"]] == ["tea"]
    assert lakehouse["sources"][0]["corpus"] == "pydocs"

    stream = client.chat.completions.create(
        model="rag/docs", messages=[{"role": "user", "content": question}], stream=True
    )
    chunks = list(stream)
    first = chunks[0].model_extra["lakehouse"]
    assert [s["id"] for s in first["sources"]][0] == "tea"
    assert len(first["sources"]) == 2
    assert all("lakehouse" not in (c.model_extra or {}) for c in chunks[1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from kimi! You said: {question}"

    status, rated = post(f"{pydocs}/v1/feedback", {"id": reply.id, "rating": 1})
    assert status == 200, rated
    assert rated["outcome"]["sources"][0]["id"] == "tea"

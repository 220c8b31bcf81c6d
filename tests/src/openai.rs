//! OpenAI `/chat/completions` in the OpenRouter, Kimi, Zen and plain OpenAI styles,
//! and the `/models` lists of those flavours.

use serde_json::{Map, Value, json};

use crate::flavour::Flavour;
use crate::plan::{
    CREATED, Ending, KIMI_CACHED_TOKENS, MIDSTREAM_MESSAGE, PROMPT_TOKENS, Plan, Reply, SIGNATURE,
    THINK_TEXT, ZEN_COST, tool_arguments, tool_pieces,
};
use crate::script::Script;

const ID: &str = "gen-1";
const OPENROUTER_COMMENT: &str = ": OPENROUTER PROCESSING\n\n";

/// OpenRouter's name for the format of reasoning from Claude.
const REASONING_FORMAT: &str = "anthropic-claude-v1";

fn is_openrouter(plan: &Plan) -> bool {
    plan.flavour == Flavour::OpenRouter
}

fn reasoning_key(plan: &Plan) -> &'static str {
    if is_openrouter(plan) {
        "reasoning"
    } else {
        "reasoning_content"
    }
}

fn finish_reason(plan: &Plan) -> &'static str {
    if plan.is_tool() { "tool_calls" } else { "stop" }
}

fn usage(plan: &Plan) -> Value {
    let mut usage = json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": plan.completion_tokens(),
        "total_tokens": plan.total_tokens(),
    });
    if is_openrouter(plan) {
        usage["cost"] = json!(0.0001);
    }
    if plan.flavour == Flavour::Kimi {
        usage["cached_tokens"] = json!(KIMI_CACHED_TOKENS);
    }
    usage
}

/// A chunk with the common head, then `extra` fields, then `choices`.
fn chunk(plan: &Plan, extra: Vec<(&str, Value)>, choices: Value) -> Value {
    let mut map = Map::new();
    map.insert("id".into(), json!(ID));
    map.insert("object".into(), json!("chat.completion.chunk"));
    map.insert("created".into(), json!(CREATED));
    map.insert("model".into(), json!(plan.model));
    if is_openrouter(plan) {
        map.insert("provider".into(), json!("FakeProvider"));
    }
    for (key, value) in extra {
        map.insert(key.into(), value);
    }
    map.insert("choices".into(), choices);
    if plan.flavour == Flavour::OpenAi && plan.include_usage {
        map.insert("usage".into(), Value::Null);
    }
    Value::Object(map)
}

/// `choices:[{index:0, delta, finish_reason}]` (+ OpenRouter's `native_finish_reason`).
fn choice(plan: &Plan, delta: Value, finish: Option<&str>) -> Value {
    let mut choice = json!({ "index": 0, "delta": delta, "finish_reason": finish });
    if is_openrouter(plan) {
        choice["native_finish_reason"] = json!(finish);
    }
    choice
}

fn delta_chunk(plan: &Plan, delta: Value) -> Value {
    chunk(plan, Vec::new(), json!([choice(plan, delta, None)]))
}

fn output_deltas(plan: &Plan) -> Vec<Value> {
    match &plan.reply {
        Reply::Text(words) => words.iter().map(|w| json!({ "content": w })).collect(),
        Reply::Tool { name, custom, .. } => {
            // A custom tool's call streams `custom: {name, input}` pieces.
            let (kind, payload) = if *custom {
                ("custom", "input")
            } else {
                ("function", "arguments")
            };
            let mut deltas = vec![json!({ "tool_calls": [{
                "index": 0, "id": "call_1", "type": kind,
                kind: { "name": name, payload: "" },
            }]})];
            deltas.extend(
                tool_pieces(*custom).iter().map(
                    |piece| json!({ "tool_calls": [{ "index": 0, kind: { payload: piece } }] }),
                ),
            );
            deltas
        }
    }
}

/// The `url_citation` annotations `#cite` adds, as OpenAI's search models
/// and OpenRouter's web plugin attach them to the answer.
pub(crate) fn citations() -> [Value; 2] {
    [1, 2].map(|n| {
        json!({ "type": "url_citation", "url_citation": {
            "url": format!("https://example.com/{n}"), "title": format!("Source {n}"),
            "start_index": 0, "end_index": 5,
        }})
    })
}

fn midstream_error(plan: &Plan) -> Value {
    if is_openrouter(plan) {
        let error = json!({
            "code": 502,
            "message": MIDSTREAM_MESSAGE,
            "metadata": { "error_type": "provider_unavailable" },
        });
        let choices = json!([choice(plan, json!({ "content": "" }), Some("error"))]);
        chunk(plan, vec![("error", error)], choices)
    } else {
        json!({ "error": { "message": MIDSTREAM_MESSAGE, "type": "server_error" } })
    }
}

fn wants_usage_chunk(plan: &Plan) -> bool {
    match plan.flavour {
        Flavour::OpenRouter | Flavour::Zen => true,
        Flavour::OpenAi => plan.include_usage,
        _ => false,
    }
}

/// The SSE stream.
pub(crate) fn stream(plan: &Plan) -> Script {
    let mut script = Script::new(plan.gap);
    if is_openrouter(plan) {
        script.event(OPENROUTER_COMMENT);
    }
    script.data(&delta_chunk(
        plan,
        json!({ "role": "assistant", "content": "" }),
    ));
    if plan.think && is_openrouter(plan) {
        // OpenRouter streams reasoning twice: as text, and as structured
        // items in pieces (text, then the signature) that share an index.
        let item = |piece: Value| {
            let mut item =
                json!({ "type": "reasoning.text", "index": 0, "format": REASONING_FORMAT });
            if let (Some(item), Value::Object(piece)) = (item.as_object_mut(), piece) {
                item.extend(piece);
            }
            json!([item])
        };
        script.data(&delta_chunk(
            plan,
            json!({ "reasoning": THINK_TEXT, "reasoning_details": item(json!({ "text": THINK_TEXT })) }),
        ));
        script.data(&delta_chunk(
            plan,
            json!({ "reasoning_details": item(json!({ "signature": SIGNATURE })) }),
        ));
    } else if plan.think {
        script.data(&delta_chunk(
            plan,
            json!({ reasoning_key(plan): THINK_TEXT }),
        ));
    }
    let outputs = output_deltas(plan);
    let keep = plan.cut(outputs.len());
    for (i, delta) in outputs.into_iter().take(keep).enumerate() {
        script.data(&delta_chunk(plan, delta));
        if i == 0 && is_openrouter(plan) {
            script.event(OPENROUTER_COMMENT);
        }
    }
    if plan.cite && plan.ending == Ending::Normal {
        for citation in citations() {
            script.data(&delta_chunk(plan, json!({ "annotations": [citation] })));
        }
    }
    match plan.ending {
        Ending::Normal => finish(plan, &mut script),
        Ending::Midstream => script.data(&midstream_error(plan)),
        Ending::Garbage => script.event("data: this is not json\n\n"),
        Ending::Drop => script.abort(),
    }
    script
}

fn finish(plan: &Plan, script: &mut Script) {
    let reason = finish_reason(plan);
    let mut last = choice(plan, json!({}), Some(reason));
    if plan.flavour == Flavour::Kimi {
        last["usage"] = usage(plan);
    }
    script.data(&chunk(plan, Vec::new(), json!([last])));
    if wants_usage_chunk(plan) {
        let mut usage_chunk = chunk(plan, Vec::new(), json!([]));
        usage_chunk["usage"] = usage(plan);
        script.data(&usage_chunk);
    }
    script.event("data: [DONE]\n\n");
    if plan.flavour == Flavour::Zen {
        script.data(&json!({ "choices": [], "cost": ZEN_COST }));
    }
}

/// The `stream:false` `chat.completion`.
pub(crate) fn complete(plan: &Plan) -> Value {
    let reason = finish_reason(plan);
    let mut message = json!({ "role": "assistant", "content": Value::Null });
    match &plan.reply {
        Reply::Text(_) => message["content"] = json!(plan.full_text()),
        Reply::Tool {
            name,
            custom: false,
            ..
        } => {
            message["tool_calls"] = json!([{
                "id": "call_1", "type": "function",
                "function": { "name": name, "arguments": tool_arguments() },
            }]);
        }
        Reply::Tool {
            name, custom: true, ..
        } => {
            message["tool_calls"] = json!([{
                "id": "call_1", "type": "custom",
                "custom": { "name": name, "input": tool_pieces(true).concat() },
            }]);
        }
    }
    if plan.think {
        message[reasoning_key(plan)] = json!(THINK_TEXT);
    }
    if plan.think && is_openrouter(plan) {
        message["reasoning_details"] = json!([{ "type": "reasoning.text", "text": THINK_TEXT,
            "signature": SIGNATURE, "index": 0, "format": REASONING_FORMAT }]);
    }
    if plan.cite {
        message["annotations"] = json!(citations());
    }
    let mut choice =
        json!({ "index": 0, "message": message, "finish_reason": reason, "logprobs": null });
    if is_openrouter(plan) {
        choice["native_finish_reason"] = json!(reason);
    }
    let mut map = Map::new();
    map.insert("id".into(), json!(ID));
    map.insert("object".into(), json!("chat.completion"));
    map.insert("created".into(), json!(CREATED));
    map.insert("model".into(), json!(plan.model));
    if is_openrouter(plan) {
        map.insert("provider".into(), json!("FakeProvider"));
    }
    map.insert("choices".into(), json!([choice]));
    map.insert("usage".into(), usage(plan));
    Value::Object(map)
}

fn listed(id: &str, owner: &str) -> Value {
    json!({ "id": id, "object": "model", "created": 1, "owned_by": owner })
}

/// `GET /models` for the OpenAI-style flavours.
pub(crate) fn models(flavour: Flavour) -> Value {
    match flavour {
        Flavour::OpenRouter => json!({ "data": [
            { "id": "openai/gpt-4o-mini", "name": "GPT-4o mini", "context_length": 128_000 },
            { "id": "anthropic/claude-sonnet-4.5", "name": "Claude Sonnet 4.5", "context_length": 200_000 },
        ]}),
        Flavour::Kimi => json!({ "object": "list", "data": [listed("kimi-k2.6", "moonshot")] }),
        Flavour::Zen => json!({ "object": "list", "data": [
            listed("claude-sonnet-4-5", "opencode"),
            listed("gpt-5.4", "opencode"),
            listed("big-pickle", "opencode"),
        ]}),
        Flavour::OpenAi | Flavour::Ollama | Flavour::OllamaCloud => {
            json!({ "object": "list", "data": [listed("gpt-4o-mini", "openai")] })
        }
    }
}

//! Anthropic Messages (`/zen/v1/messages`), with Zen's trailing cost ping.

use serde_json::{Value, json};

use crate::plan::{
    Ending, MIDSTREAM_MESSAGE, PROMPT_TOKENS, Plan, Reply, SIGNATURE, THINK_TEXT, TOOL_ARG_PIECES,
    ZEN_COST,
};
use crate::script::Script;

const ID: &str = "msg_1";
const TOOL_ID: &str = "toolu_1";

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.is_tool() {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn block_start(index: usize, block: Value) -> Value {
    json!({ "type": "content_block_start", "index": index, "content_block": block })
}

fn block_delta(index: usize, delta: Value) -> Value {
    json!({ "type": "content_block_delta", "index": index, "delta": delta })
}

fn block_stop(index: usize) -> Value {
    json!({ "type": "content_block_stop", "index": index })
}

/// Writes events, sending one `ping` right after the first `content_block_start`.
struct Writer {
    script: Script,
    pinged: bool,
}

impl Writer {
    fn send(&mut self, value: &Value) {
        let name = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        self.script.named(name, value);
        if name == "content_block_start" && !self.pinged {
            self.pinged = true;
            self.script.named("ping", &json!({ "type": "ping" }));
        }
    }
}

/// The SSE stream.
pub(crate) fn stream(plan: &Plan) -> Script {
    let mut w = Writer {
        script: Script::new(plan.gap),
        pinged: false,
    };
    w.send(&json!({
        "type": "message_start",
        "message": {
            "id": ID, "type": "message", "role": "assistant", "model": plan.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {
                "input_tokens": PROMPT_TOKENS, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": 1,
            },
        },
    }));
    if plan.fails_before_output() {
        w.send(&overloaded());
        return w.script;
    }
    let mut index = 0;
    if plan.think {
        w.send(&block_start(
            index,
            json!({ "type": "thinking", "thinking": "", "signature": "" }),
        ));
        w.send(&block_delta(
            index,
            json!({ "type": "thinking_delta", "thinking": THINK_TEXT }),
        ));
        w.send(&block_delta(
            index,
            json!({ "type": "signature_delta", "signature": SIGNATURE }),
        ));
        w.send(&block_stop(index));
        index += 1;
    }
    w.send(&block_start(index, json!({ "type": "text", "text": "" })));
    let deltas: Vec<Value> = match &plan.reply {
        Reply::Text(words) => words
            .iter()
            .map(|word| json!({ "type": "text_delta", "text": word }))
            .collect(),
        Reply::Tool { name, .. } => {
            w.send(&block_stop(index));
            index += 1;
            w.send(&block_start(
                index,
                json!({ "type": "tool_use", "id": TOOL_ID, "name": name, "input": {} }),
            ));
            TOOL_ARG_PIECES
                .iter()
                .map(|piece| json!({ "type": "input_json_delta", "partial_json": piece }))
                .collect()
        }
    };
    let keep = plan.cut(deltas.len());
    for delta in deltas.into_iter().take(keep) {
        w.send(&block_delta(index, delta));
    }
    match plan.ending {
        Ending::Normal => {
            w.send(&block_stop(index));
            w.send(&json!({
                "type": "message_delta",
                "delta": { "stop_reason": stop_reason(plan), "stop_sequence": null },
                "usage": { "output_tokens": plan.completion_tokens() },
            }));
            w.send(&json!({ "type": "message_stop" }));
            w.script
                .named("ping", &json!({ "type": "ping", "cost": ZEN_COST }));
        }
        Ending::Midstream => w.send(&overloaded()),
        Ending::Garbage => w.script.event("data: this is not json\n\n"),
        Ending::Drop => w.script.abort(),
    }
    w.script
}

/// The mid-stream `overloaded_error` event.
fn overloaded() -> Value {
    json!({
        "type": "error",
        "error": { "type": "overloaded_error", "message": MIDSTREAM_MESSAGE },
    })
}

/// The `stream:false` message.
pub(crate) fn complete(plan: &Plan) -> Value {
    let mut content = Vec::new();
    if plan.think {
        content.push(json!({ "type": "thinking", "thinking": THINK_TEXT, "signature": SIGNATURE }));
    }
    match &plan.reply {
        Reply::Text(_) => content.push(json!({ "type": "text", "text": plan.full_text() })),
        Reply::Tool { name, .. } => content.push(json!({
            "type": "tool_use", "id": TOOL_ID, "name": name, "input": { "city": "Oslo" },
        })),
    }
    json!({
        "id": ID,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content,
        "stop_reason": stop_reason(plan),
        "stop_sequence": null,
        "usage": { "input_tokens": PROMPT_TOKENS, "output_tokens": plan.completion_tokens() },
    })
}

/// Anthropic's own 400 for a request without `max_tokens`.
pub(crate) fn missing_max_tokens() -> Value {
    json!({
        "type": "error",
        "error": { "type": "invalid_request_error", "message": "max_tokens is required" },
    })
}

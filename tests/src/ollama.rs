//! Ollama native `/api/chat` (NDJSON) and `/api/tags`.

use serde_json::{Value, json};

use crate::plan::{CREATED_AT, Ending, MIDSTREAM_MESSAGE, PROMPT_TOKENS, Plan, Reply, THINK_TEXT};
use crate::script::Script;

pub(crate) const CONTENT_TYPE: &str = "application/x-ndjson";

fn line(plan: &Plan, message: Value) -> Value {
    json!({
        "model": plan.model,
        "created_at": CREATED_AT,
        "message": message,
        "done": false,
    })
}

fn tool_call(name: &str, with_id: bool) -> Value {
    let function = json!({ "index": 0, "name": name, "arguments": { "city": "Oslo" } });
    if with_id {
        json!({ "id": "call_k3x9", "function": function })
    } else {
        json!({ "function": function })
    }
}

/// Ollama's `logprobs` for the tokens of `text` (one per word here), when asked.
fn logprobs(plan: &Plan, text: &str) -> Option<Value> {
    plan.logprobs.then(|| {
        text.split_inclusive(' ')
            .map(|token| {
                json!({ "token": token, "logprob": -0.25, "bytes": token.as_bytes(),
                        "top_logprobs": [{ "token": token, "logprob": -0.25, "bytes": token.as_bytes() }] })
            })
            .collect()
    })
}

/// The final statistics, with `message`.
fn done(plan: &Plan, message: Value) -> Value {
    json!({
        "model": plan.model,
        "created_at": CREATED_AT,
        "message": message,
        "done": true,
        "done_reason": "stop",
        "total_duration": 1000,
        "load_duration": 10,
        "prompt_eval_count": PROMPT_TOKENS,
        "prompt_eval_duration": 100,
        "eval_count": plan.completion_tokens(),
        "eval_duration": 900,
    })
}

/// The NDJSON stream; its second line is sent in two frames.
pub(crate) fn stream(plan: &Plan) -> Script {
    let mut lines = Vec::new();
    if plan.think {
        lines.push(line(
            plan,
            json!({ "role": "assistant", "content": "", "thinking": THINK_TEXT }),
        ));
    }
    let outputs: Vec<Value> = match &plan.reply {
        Reply::Text(words) => words
            .iter()
            .map(|w| {
                let mut line = line(plan, json!({ "role": "assistant", "content": w }));
                if let Some(logprobs) = logprobs(plan, w) {
                    line["logprobs"] = logprobs;
                }
                line
            })
            .collect(),
        Reply::Tool { name, with_id, .. } => vec![line(
            plan,
            json!({ "role": "assistant", "content": "", "tool_calls": [tool_call(name, *with_id)] }),
        )],
    };
    let keep = plan.cut(outputs.len());
    lines.extend(outputs.into_iter().take(keep));
    match plan.ending {
        Ending::Normal => lines.push(done(plan, json!({ "role": "assistant", "content": "" }))),
        Ending::Midstream => lines.push(json!({ "error": MIDSTREAM_MESSAGE })),
        Ending::Drop | Ending::Garbage => {}
    }

    let mut script = Script::new(plan.gap);
    for (i, value) in lines.iter().enumerate() {
        let text = format!("{value}\n");
        if i == 1 {
            script.event_split(text);
        } else {
            script.event(text);
        }
    }
    match plan.ending {
        Ending::Garbage => script.event("this is not json\n"),
        Ending::Drop => script.abort(),
        Ending::Normal | Ending::Midstream => {}
    }
    script
}

/// The `stream:false` answer.
pub(crate) fn complete(plan: &Plan) -> Value {
    let mut message = json!({ "role": "assistant", "content": plan.full_text() });
    if plan.think {
        message["thinking"] = json!(THINK_TEXT);
    }
    if let Reply::Tool { name, with_id, .. } = &plan.reply {
        message["tool_calls"] = json!([tool_call(name, *with_id)]);
    }
    let mut whole = done(plan, message);
    if let Some(logprobs) = logprobs(plan, &plan.full_text()) {
        whole["logprobs"] = logprobs;
    }
    whole
}

fn tag(name: &str, family: &str, size: &str) -> Value {
    json!({
        "name": name,
        "model": name,
        "modified_at": "2026-11-01T00:00:00Z",
        "size": 1,
        "digest": "d",
        "details": {
            "format": "gguf",
            "family": family,
            "parameter_size": size,
            "quantization_level": "Q4_K_M",
        },
    })
}

/// `GET /api/tags`.
pub(crate) fn tags() -> Value {
    json!({
        "models": [
            tag("qwen3:8b", "qwen3", "8B"),
            tag("llama3.2:latest", "llama", "3.2B"),
        ]
    })
}

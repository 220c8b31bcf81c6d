//! OpenAI Responses (`/zen/v1/responses`), with Zen's trailing cost ping.

use serde_json::{Map, Value, json};

use crate::plan::{
    CREATED, Ending, MIDSTREAM_MESSAGE, PROMPT_TOKENS, Plan, Reply, THINK_TEXT, ZEN_COST,
    tool_pieces,
};
use crate::script::Script;

const ID: &str = "resp_1";
const MESSAGE_ID: &str = "msg_1";
const REASONING_ID: &str = "rs_1";
const CALL_ITEM_ID: &str = "fc_1";
const CALL_ID: &str = "call_1";

fn usage(plan: &Plan) -> Value {
    json!({
        "input_tokens": PROMPT_TOKENS,
        "output_tokens": plan.completion_tokens(),
        "total_tokens": plan.total_tokens(),
        "input_tokens_details": { "cached_tokens": 0 },
        "output_tokens_details": { "reasoning_tokens": 0 },
    })
}

fn response(plan: &Plan, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": ID,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "model": plan.model,
        "output": output,
        "usage": usage,
    })
}

/// What a reasoning item carries when `include` asks for its encrypted content.
const ENCRYPTED_REASONING: &str = "fake-encrypted-reasoning";

/// OpenAI's 400 for a reasoning input item whose encrypted content this
/// fake did not give (another organisation's, or a damaged copy).
pub(crate) fn unverifiable_reasoning(body: &Value) -> Option<Value> {
    let foreign = body["input"].as_array()?.iter().find(|item| {
        item["type"] == "reasoning" && item["encrypted_content"] != ENCRYPTED_REASONING
    })?;
    let message = format!(
        "The encrypted content for item {} could not be verified. Reason: Encrypted content could not be decrypted or parsed.",
        foreign["id"].as_str().unwrap_or_default()
    );
    Some(json!({
        "error": {
            "message": message, "type": "invalid_request_error",
            "param": null, "code": "invalid_encrypted_content",
        }
    }))
}

/// The finished reasoning item.
fn reasoning_item() -> Value {
    json!({
        "type": "reasoning", "id": REASONING_ID,
        "summary": [{ "type": "summary_text", "text": THINK_TEXT }],
        "encrypted_content": ENCRYPTED_REASONING,
    })
}

fn text_part(text: &str) -> Value {
    json!({ "type": "output_text", "text": text, "annotations": [] })
}

fn message_item(status: &str, content: Vec<Value>) -> Value {
    json!({
        "type": "message", "id": MESSAGE_ID, "status": status,
        "role": "assistant", "content": content,
    })
}

/// A `function_call` item, or a `custom_tool_call` one (its payload is `input`).
fn call_item(name: &str, custom: bool, status: &str, payload: &str) -> Value {
    if custom {
        return json!({
            "type": "custom_tool_call", "id": CALL_ITEM_ID, "call_id": CALL_ID,
            "name": name, "input": payload, "status": status,
        });
    }
    json!({
        "type": "function_call", "id": CALL_ITEM_ID, "call_id": CALL_ID,
        "name": name, "arguments": payload, "status": status,
    })
}

/// The completed output items.
fn output(plan: &Plan) -> Vec<Value> {
    let mut items = Vec::new();
    if plan.think {
        items.push(reasoning_item());
    }
    match &plan.reply {
        Reply::Text(_) => items.push(message_item(
            "completed",
            vec![text_part(&plan.full_text())],
        )),
        Reply::Tool { name, custom, .. } => items.push(call_item(
            name,
            *custom,
            "completed",
            &tool_pieces(*custom).concat(),
        )),
    }
    items
}

/// Writes `event: <type>` + `data: {"type","sequence_number",...}`.
struct Writer {
    script: Script,
    sequence: u64,
}

impl Writer {
    fn send(&mut self, kind: &str, fields: Value) {
        let mut map = Map::new();
        map.insert("type".into(), json!(kind));
        map.insert("sequence_number".into(), json!(self.sequence));
        if let Value::Object(fields) = fields {
            map.extend(fields);
        }
        self.sequence += 1;
        self.script.named(kind, &Value::Object(map));
    }
}

/// The `response.failed` event's body.
fn failed() -> Value {
    json!({ "response": {
        "id": ID, "object": "response", "status": "failed",
        "error": { "code": "server_error", "message": MIDSTREAM_MESSAGE },
    }})
}

/// The SSE stream (no `[DONE]`).
pub(crate) fn stream(plan: &Plan) -> Script {
    let mut w = Writer {
        script: Script::new(plan.gap),
        sequence: 0,
    };
    let started = response(plan, "in_progress", Vec::new(), Value::Null);
    w.send("response.created", json!({ "response": started }));
    w.send("response.in_progress", json!({ "response": started }));
    if plan.fails_before_output() {
        w.send("response.failed", failed());
        return w.script;
    }
    let mut index = 0;
    if plan.think {
        let item = json!({ "type": "reasoning", "id": REASONING_ID, "summary": [] });
        w.send(
            "response.output_item.added",
            json!({ "output_index": index, "item": item }),
        );
        let at = json!({ "item_id": REASONING_ID, "output_index": index, "summary_index": 0 });
        let mut delta = at.clone();
        delta["delta"] = json!(THINK_TEXT);
        w.send("response.reasoning_summary_text.delta", delta);
        let mut done = at;
        done["text"] = json!(THINK_TEXT);
        w.send("response.reasoning_summary_text.done", done);
        w.send(
            "response.output_item.done",
            json!({ "output_index": index, "item": reasoning_item() }),
        );
        index += 1;
    }
    let finished = match &plan.reply {
        Reply::Text(words) => stream_text(plan, &mut w, index, words),
        Reply::Tool { name, custom, .. } => stream_call(plan, &mut w, index, name, *custom),
    };
    match plan.ending {
        Ending::Normal if finished => {
            let done = response(plan, "completed", output(plan), usage(plan));
            w.send("response.completed", json!({ "response": done }));
            w.script
                .named("ping", &json!({ "type": "ping", "cost": ZEN_COST }));
        }
        Ending::Normal | Ending::Midstream => w.send("response.failed", failed()),
        Ending::Garbage => w.script.event("data: this is not json\n\n"),
        Ending::Drop => w.script.abort(),
    }
    w.script
}

/// Streams the message item; returns whether it was finished.
fn stream_text(plan: &Plan, w: &mut Writer, index: usize, words: &[String]) -> bool {
    w.send(
        "response.output_item.added",
        json!({ "output_index": index, "item": message_item("in_progress", Vec::new()) }),
    );
    let at = json!({ "item_id": MESSAGE_ID, "output_index": index, "content_index": 0 });
    let mut added = at.clone();
    added["part"] = text_part("");
    w.send("response.content_part.added", added);
    let keep = plan.cut(words.len());
    for word in words.iter().take(keep) {
        let mut delta = at.clone();
        delta["delta"] = json!(word);
        w.send("response.output_text.delta", delta);
    }
    if plan.ending != Ending::Normal {
        return false;
    }
    // `#cite`: the two citations as Responses flattens them, one event each.
    if plan.cite {
        for (n, citation) in crate::openai::citations().iter().enumerate() {
            let mut annotation = citation["url_citation"].clone();
            annotation["type"] = json!("url_citation");
            let mut added = at.clone();
            added["annotation_index"] = json!(n);
            added["annotation"] = annotation;
            w.send("response.output_text.annotation.added", added);
        }
    }
    let text = plan.full_text();
    let mut done = at.clone();
    done["text"] = json!(text);
    w.send("response.output_text.done", done);
    let mut part_done = at;
    part_done["part"] = text_part(&text);
    w.send("response.content_part.done", part_done);
    w.send(
        "response.output_item.done",
        json!({ "output_index": index, "item": message_item("completed", vec![text_part(&text)]) }),
    );
    true
}

/// Streams the function (or custom tool) call item; returns whether it was finished.
fn stream_call(plan: &Plan, w: &mut Writer, index: usize, name: &str, custom: bool) -> bool {
    w.send(
        "response.output_item.added",
        json!({ "output_index": index, "item": call_item(name, custom, "in_progress", "") }),
    );
    let (events, payload) = if custom {
        ("response.custom_tool_call_input", "input")
    } else {
        ("response.function_call_arguments", "arguments")
    };
    let pieces = tool_pieces(custom);
    let at = json!({ "item_id": CALL_ITEM_ID, "output_index": index });
    // The item announcement counts as the first of the call's output events.
    let keep = plan.cut(1 + pieces.len()).saturating_sub(1);
    for piece in pieces.iter().take(keep) {
        let mut delta = at.clone();
        delta["delta"] = json!(piece);
        w.send(&format!("{events}.delta"), delta);
    }
    if plan.ending != Ending::Normal {
        return false;
    }
    let whole = pieces.concat();
    let mut done = at;
    done[payload] = json!(whole);
    w.send(&format!("{events}.done"), done);
    w.send(
        "response.output_item.done",
        json!({ "output_index": index, "item": call_item(name, custom, "completed", &whole) }),
    );
    true
}

/// The `stream:false` response object.
pub(crate) fn complete(plan: &Plan) -> Value {
    response(plan, "completed", output(plan), usage(plan))
}

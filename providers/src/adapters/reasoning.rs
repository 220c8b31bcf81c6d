//! Structured reasoning items (`reasoning_details`, in OpenRouter's shape),
//! written for the client and read back from its history: how a provider's
//! signed or encrypted reasoning survives the turns of a tool loop.
//!
//! An item is `{type, index, format, ...}` with `type` one of
//! `reasoning.text` (`text`, `signature`), `reasoning.summary` or
//! `reasoning.encrypted` (`data`). Streamed, an item comes in pieces that
//! share its `index` and `type`; clients join the rest of the pieces'
//! strings (and add up their numbers), so keys that must not be joined go
//! on the first piece only.

use serde_json::{Map, Value, json};

use crate::openai::Message;

/// Writes one item's pieces.
#[derive(Debug, Clone)]
pub(crate) struct ItemWriter {
    index: u32,
    /// The keys the first piece carries (`format`, and what an adapter adds);
    /// `None` once it went out.
    first: Option<Map<String, Value>>,
}

impl ItemWriter {
    /// The writer of item number `index` of a response, in `format`.
    pub(crate) fn new(index: u32, format: &str) -> Self {
        let mut first = Map::new();
        first.insert("format".into(), format.into());
        Self {
            index,
            first: Some(first),
        }
    }

    /// Adds a key the first piece carries.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Some(first) = &mut self.first {
            first.insert(key.into(), value.into());
        }
        self
    }

    /// One piece, as the one-element list a delta carries.
    pub(crate) fn piece(&mut self, kind: &str, key: &str, value: impl Into<Value>) -> Vec<Value> {
        let mut piece = json!({ "type": kind, key: value.into(), "index": self.index });
        if let (Some(first), Value::Object(map)) = (self.first.take(), &mut piece) {
            map.extend(first);
        }
        vec![piece]
    }
}

/// The reasoning items of an assistant message, as the client sent them back.
pub(crate) fn items(message: &Message) -> impl Iterator<Item = &Map<String, Value>> {
    message
        .extra
        .get("reasoning_details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// A non-empty string field of an item.
pub(crate) fn field<'a>(item: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    item.get(key)
        .and_then(Value::as_str)
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_piece_alone_carries_the_fixed_keys() {
        let mut item = ItemWriter::new(3, "f").with("after", 2);
        assert_eq!(
            item.piece("reasoning.text", "text", "a"),
            vec![
                json!({"type": "reasoning.text", "text": "a", "index": 3, "format": "f", "after": 2})
            ]
        );
        assert_eq!(
            item.piece("reasoning.text", "signature", "s"),
            vec![json!({"type": "reasoning.text", "signature": "s", "index": 3})]
        );
    }
}

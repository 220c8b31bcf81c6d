//! Reading the chunks upstreams stream most, without serde's machinery.
//!
//! Every OpenAI-compatible upstream (OpenRouter, Kimi, Ollama Cloud, Zen's
//! chat models) sends an answer as many small `chat.completion.chunk`
//! objects, nearly all of one shape: an id, a model, a timestamp and one
//! choice whose delta carries a few characters of text; the last one carries
//! the token counts instead. serde's derived
//! decoding took 3,500 to 4,500 instructions a chunk (a quarter of a streamed
//! chat's work in the proxy): its visitor machinery matches every key through
//! a generic field enum and reads the ignored id, object and model strings
//! in full. Reading the common shape here takes about 3,100.
//!
//! [`read_chunk`] reads that common shape in one pass and gives up (returns
//! `None`) on anything else: tool calls, usage details, logprobs, an error,
//! a delta key it does not know (passed on by serde: annotations, images),
//! a duplicate field, a value of a type it does not expect, a lone
//! surrogate, deep nesting. The caller then uses serde, so a chunk
//! decodes to exactly what serde makes of it or fails with serde's error;
//! property tests compare the two on generated and mutated chunks.
//!
//! [`from_json_bytes`] is how the proxy parses JSON it holds as bytes.

use crate::openai::{ChatChunk, ChunkChoice, Delta, FinishReason, Role, Usage};

impl ChatChunk {
    /// Decodes an upstream's chunk: the same chunk, or the same error, as
    /// `serde_json::from_str`.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        match read_chunk(text) {
            Some(chunk) => Ok(chunk),
            None => serde_json::from_str(text),
        }
    }
}

/// Parses JSON from bytes. `serde_json::from_slice` checks that each string
/// is UTF-8 as it meets it (a call and ~100 instructions a string, dozens a
/// request); checking the whole text once, a word at a time, and reading it as
/// `str` accepts and refuses the same inputs for less.
pub fn from_json_bytes<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(e) => Err(<serde_json::Error as serde::de::Error>::custom(format!(
            "invalid UTF-8 at byte {}",
            e.valid_up_to()
        ))),
    }
}

/// Deepest nesting an ignored value may have before the fast path gives up.
const MAX_SKIP_DEPTH: usize = 32;

/// The chunk in `text` when it has the common shape; `None` means "ask serde".
pub(crate) fn read_chunk(text: &str) -> Option<ChatChunk> {
    let mut reader = Reader { text, at: 0 };
    let chunk = reader.chunk()?;
    reader.skip_whitespace();
    (reader.at == text.len()).then_some(chunk)
}

/// A position in the text being read.
struct Reader<'a> {
    text: &'a str,
    at: usize,
}

/// How many bytes of `bytes` come before the first `"`, `\\` or control
/// character: the run a JSON string holds as is (read or written whole).
/// Eight bytes at a time: a byte loop was most of the cost of reading a chunk.
pub(crate) fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    /// The high bit of each byte of `word` that is zero; wrong bits only ever
    /// follow a right one, so the lowest is exact.
    fn zero_bytes(word: u64) -> u64 {
        word.wrapping_sub(ONES) & !word & HIGH
    }
    let mut words = bytes.chunks_exact(8);
    let mut done = 0;
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let word = u64::from_le_bytes(word);
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
        let found = zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')))
            | control;
        if found != 0 {
            return done + (found.trailing_zeros() / 8) as usize;
        }
        done += 8;
    }
    let tail = bytes.get(done..).unwrap_or_default();
    done + tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(tail.len())
}

impl<'a> Reader<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_whitespace(&mut self) {
        // Compact JSON has none: one comparison says so.
        while let Some(&byte) = self.bytes().get(self.at)
            && byte <= b' '
            && matches!(byte, b' ' | b'\n' | b'\r' | b'\t')
        {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &str) -> Option<()> {
        self.skip_whitespace();
        let rest = self.bytes().get(self.at..)?;
        rest.starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    /// Reads `{ key: value, ... }`, handing each key to `field`, which reads
    /// (or skips) the value and answers the field's bit (0 for a key it does
    /// not read). A field seen twice gives up: serde refuses a repeated field.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a [u8]) -> Option<u32>) -> Option<()> {
        let mut seen = 0u32;
        self.list(b'{', b'}', |reader| {
            let key = reader.plain()?;
            reader.eat(b':')?;
            let bit = field(reader, key)?;
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            Some(())
        })
    }

    /// Reads `open item, item, ... close` (an array or an object's members).
    fn list(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            match self.peek()? {
                b',' => self.at += 1,
                byte if byte == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes, as bytes: what keys and names are (every one
    /// serde knows is plain); they are only compared, and bytes need no
    /// character boundary checks.
    fn plain(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = self.bytes().get(self.at..)?;
        let length = plain_prefix(rest);
        self.at += length;
        self.eat_now(b'"')?;
        rest.get(..length)
    }

    /// `byte` right here (no whitespace before it).
    fn eat_now(&mut self, byte: u8) -> Option<()> {
        (*self.bytes().get(self.at)? == byte).then(|| self.at += 1)
    }

    /// A string, unescaped.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let plain = plain_prefix(self.bytes().get(self.at..)?);
            out.push_str(self.text.get(self.at..self.at + plain)?);
            self.at += plain;
            if self.eat_now(b'"').is_some() {
                return Some(out);
            }
            out.push(self.escape()?);
        }
    }

    /// Passes over a string, checking it is well formed.
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.at += plain_prefix(self.bytes().get(self.at..)?);
            if self.eat_now(b'"').is_some() {
                return Some(());
            }
            self.escape()?;
        }
    }

    /// The character of the escape at a backslash (a control character, which
    /// JSON does not allow in a string, is `None`).
    fn escape(&mut self) -> Option<char> {
        self.eat_now(b'\\')?;
        let byte = *self.bytes().get(self.at)?;
        self.at += 1;
        Some(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hex = self.text.get(self.at..self.at + 4)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                self.at += 4;
                // Surrogates (pairs or lone ones) are left to serde.
                char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
            }
            _ => return None,
        })
    }

    fn optional_string(&mut self) -> Option<Option<String>> {
        if self.peek()? == b'n' {
            self.literal("null")?;
            Some(None)
        } else {
            self.string().map(Some)
        }
    }

    /// `null`, the only value of the fields the fast path leaves to serde.
    fn null(&mut self) -> Option<()> {
        self.literal("null")
    }

    /// `null` or `[]`.
    fn empty_list(&mut self) -> Option<()> {
        if self.peek()? == b'n' {
            return self.null();
        }
        self.list(b'[', b']', |_| None)
    }

    /// A non-negative integer as JSON writes it (no sign, fraction or exponent).
    fn unsigned(&mut self) -> Option<u64> {
        self.skip_whitespace();
        let rest = self.bytes().get(self.at..)?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        // Up to 19 digits always fit in a u64; longer numbers are left to serde.
        if digits == 0 || digits > 19 || (digits > 1 && rest.first() == Some(&b'0')) {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = rest.get(digits) {
            return None;
        }
        let value = rest
            .get(..digits)?
            .iter()
            .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
        self.at += digits;
        Some(value)
    }

    /// Passes over any value, checking it is well formed.
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_SKIP_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' => self.object(|reader, _| reader.skip(depth + 1).map(|()| 0)),
            b'[' => self.list(b'[', b']', |reader| reader.skip(depth + 1)),
            b'n' => self.literal("null"),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            _ => self.skip_number(),
        }
    }

    /// `-? int frac? exp?` as RFC 8259 writes it.
    fn skip_number(&mut self) -> Option<()> {
        let bytes = self.bytes();
        let digits = |at: &mut usize| {
            let start = *at;
            while bytes.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            *at - start
        };
        let mut at = self.at;
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        let start = at;
        let whole = digits(&mut at);
        if whole == 0 || (whole > 1 && bytes.get(start) == Some(&b'0')) {
            return None;
        }
        if bytes.get(at) == Some(&b'.') {
            at += 1;
            if digits(&mut at) == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            if digits(&mut at) == 0 {
                return None;
            }
        }
        self.at = at;
        Some(())
    }

    fn chunk(&mut self) -> Option<ChatChunk> {
        let mut chunk = ChatChunk::default();
        self.object(|reader, key| {
            Some(match key {
                b"created" => {
                    chunk.created = reader.unsigned()?;
                    1
                }
                b"system_fingerprint" => {
                    chunk.system_fingerprint = reader.optional_string()?;
                    2
                }
                b"choices" => {
                    // Nearly every chunk has exactly one choice.
                    let mut choices = Vec::with_capacity(1);
                    reader.list(b'[', b']', |reader| {
                        choices.push(reader.choice()?);
                        Some(())
                    })?;
                    chunk.choices = choices;
                    4
                }
                b"usage" => {
                    chunk.usage = reader.usage()?;
                    8
                }
                // Rare fields with a value are left to serde.
                b"error" => reader.null().map(|()| 16)?,
                b"lakehouse" => reader.null().map(|()| 32)?,
                // `id`, `object` and `model` are not read (see `ChatChunk`).
                _ => reader.skip(0).map(|()| 0)?,
            })
        })?;
        Some(chunk)
    }

    fn choice(&mut self) -> Option<ChunkChoice> {
        let mut choice = ChunkChoice::default();
        self.object(|reader, key| {
            Some(match key {
                b"index" => {
                    choice.index = u32::try_from(reader.unsigned()?).ok()?;
                    1
                }
                b"delta" => {
                    choice.delta = reader.delta()?;
                    2
                }
                b"finish_reason" => {
                    choice.finish_reason = reader.finish_reason()?;
                    4
                }
                b"logprobs" => reader.null().map(|()| 8)?,
                b"usage" => reader.null().map(|()| 16)?,
                b"error" => reader.null().map(|()| 32)?,
                _ => reader.skip(0).map(|()| 0)?,
            })
        })?;
        Some(choice)
    }

    fn delta(&mut self) -> Option<Delta> {
        let mut delta = Delta::default();
        self.object(|reader, key| {
            let (bit, text) = match key {
                b"role" => {
                    delta.role = reader.role()?;
                    return Some(1);
                }
                b"tool_calls" => return reader.null().map(|()| 2),
                b"content" => (4, &mut delta.content),
                b"reasoning_content" => (8, &mut delta.reasoning_content),
                b"reasoning" => (16, &mut delta.reasoning),
                b"refusal" => (32, &mut delta.refusal),
                // OpenRouter's `[]` on every chunk; items are left to serde.
                b"reasoning_details" => return reader.empty_list().map(|()| 64),
                // Kept by serde in `extra` (annotations, images, ...).
                _ => return None,
            };
            *text = reader.optional_string()?;
            Some(bit)
        })?;
        Some(delta)
    }

    /// `null` or bare token counts, as the last chunk of every stream the
    /// proxy asks usage for carries them; details and a cost are left to serde.
    fn usage(&mut self) -> Option<Option<Usage>> {
        if self.peek()? == b'n' {
            self.null()?;
            return Some(None);
        }
        let mut usage = Usage::default();
        self.object(|reader, key| {
            let (bit, count) = match key {
                b"prompt_tokens" => (1, &mut usage.prompt_tokens),
                b"completion_tokens" => (2, &mut usage.completion_tokens),
                b"total_tokens" => (4, &mut usage.total_tokens),
                b"prompt_tokens_details"
                | b"completion_tokens_details"
                | b"cost"
                | b"cached_tokens" => return None,
                _ => return reader.skip(0).map(|()| 0),
            };
            *count = reader.unsigned()?;
            Some(bit)
        })?;
        Some(Some(usage))
    }

    fn role(&mut self) -> Option<Option<Role>> {
        if self.peek()? == b'n' {
            self.null()?;
            return Some(None);
        }
        let role = match self.plain()? {
            b"system" => Role::System,
            b"developer" => Role::Developer,
            b"user" => Role::User,
            b"assistant" => Role::Assistant,
            b"tool" => Role::Tool,
            _ => return None,
        };
        Some(Some(role))
    }

    fn finish_reason(&mut self) -> Option<Option<FinishReason>> {
        if self.peek()? == b'n' {
            self.null()?;
            return Some(None);
        }
        let name = std::str::from_utf8(self.plain()?).ok()?;
        Some(Some(FinishReason::from_name(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_serde(text: &str) -> Result<ChatChunk, String> {
        serde_json::from_str::<ChatChunk>(text).map_err(|e| e.to_string())
    }

    /// The fast path agrees with serde wherever it answers.
    fn agrees(text: &str) -> Result<(), TestCaseError> {
        if let Some(fast) = read_chunk(text) {
            match by_serde(text) {
                Ok(slow) => prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{}", text),
                Err(e) => prop_assert!(false, "serde refused what the fast path read: {e}\n{text}"),
            }
        }
        Ok(())
    }

    const COMMON: &[&str] = &[
        r#"{"id":"gen-1","object":"chat.completion.chunk","created":1763900000,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"gen-1","object":"chat.completion.chunk","created":1763900000,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello \"you\"\n\u00e9\u4e2d ok"},"finish_reason":null,"logprobs":null}]}"#,
        r#"{"id":"gen-1","object":"chat.completion.chunk","created":1763900000,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
        // OpenRouter: provider, native finish reason, reasoning and null fields.
        r#"{"id":"gen-17","provider":"OpenAI","model":"openai/gpt-4o","object":"chat.completion.chunk","created":1763900001,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi","reasoning":null,"reasoning_details":[]},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],"system_fingerprint":"fp_1"}"#,
        // Kimi: reasoning_content.
        r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1763900002,"model":"kimi-k2","choices":[{"index":0,"delta":{"reasoning_content":"think"},"finish_reason":null}]}"#,
        // The usage chunk that ends a stream asked for usage.
        r#"{"id":"gen-1","object":"chat.completion.chunk","created":1763900000,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":6,"total_tokens":17}}"#,
        r#"{"choices":[],"usage":{"total_tokens":3,"queue_time":0.5},"usage_extra":null}"#,
        " { \"choices\" : [ ] , \"created\" : 0 } \n",
    ];

    #[test]
    fn finish_reasons_outside_openais_set_are_stop_on_both_paths() {
        let text = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"sensitive"}]}"#;
        let fast = read_chunk(text).unwrap();
        let slow: ChatChunk = serde_json::from_str(text).unwrap();
        assert_eq!(fast.choices[0].finish_reason, Some(FinishReason::Stop));
        assert_eq!(slow.choices[0].finish_reason, Some(FinishReason::Stop));
        let known = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#;
        assert_eq!(
            read_chunk(known).unwrap().choices[0].finish_reason,
            Some(FinishReason::ToolCalls)
        );
    }

    #[test]
    fn the_common_shapes_take_the_fast_path_and_match_serde() {
        for text in COMMON {
            let fast = read_chunk(text).unwrap_or_else(|| panic!("fast path refused {text}"));
            let slow = by_serde(text).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
        }
        let hello = read_chunk(COMMON[1]).unwrap();
        assert_eq!(
            hello.choices[0].delta.content.as_deref(),
            Some("Hello \"you\"\n\u{e9}\u{4e2d} ok")
        );
    }

    #[test]
    fn what_the_fast_path_leaves_to_serde() {
        for text in [
            // Rare fields with values: serde reads them.
            r#"{"choices":[],"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":1}}}"#,
            r#"{"choices":[],"usage":{"total_tokens":3,"cost":0.001}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"cached_tokens":8}}"#,
            r#"{"choices":[],"usage":{"completion_tokens_details":null}}"#,
            r#"{"choices":[{"index":0,"delta":{},"usage":{"total_tokens":3}}]}"#,
            // What serde refuses, the fast path refuses too.
            r#"{"choices":[],"usage":{"total_tokens":3,"total_tokens":3}}"#,
            r#"{"choices":[],"usage":{"total_tokens":3.0}}"#,
            r#"{"choices":[],"usage":{"total_tokens":-3}}"#,
            r#"{"choices":[],"usage":[]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"logprobs":{"content":[]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_details":[{"type":"reasoning.text","text":"hm","index":0}]}}]}"#,
            r#"{"error":{"message":"boom"},"choices":[]}"#,
            // What serde refuses, the fast path refuses too.
            r#"{"choices":[],"choices":[]}"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"created":-1}"#,
            r#"{"created":1.5}"#,
            r#"{"created":01}"#,
            r#"{"choices":[{"index":4294967296}]}"#,
            r#"{"choices":[{"delta":{"role":"robot"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\ud83d\ude00"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\ud83d"}}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"a\u{1}b\"}}]}",
            r#"{"choices":[]} x"#,
            r#"{"choices":[],}"#,
            r#"{"x":[1,2,]}"#,
            r#"{"x":-}"#,
            r#"{"x":1.}"#,
            r#"{"x":1e}"#,
            r#"{"x":tru}"#,
            "",
            "[DONE]",
        ] {
            assert!(read_chunk(text).is_none(), "fast path read {text}");
        }
        // Twenty digits, and a deep ignored value: left to serde, which reads them.
        let big = r#"{"created":18446744073709551615,"choices":[]}"#;
        assert!(read_chunk(big).is_none());
        assert_eq!(by_serde(big).unwrap().created, u64::MAX);
        let deep = format!(
            r#"{{"x":{}1{},"choices":[]}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(read_chunk(&deep).is_none());
        assert!(by_serde(&deep).is_ok());
    }

    /// Chunks as upstreams write them, with serde's own encoding of the
    /// strings, extra keys and optional spacing.
    fn chunk_text() -> impl Strategy<Value = String> {
        let text = prop_oneof![
            Just("null".to_owned()),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            "[a-z \"\\\\\n]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        let delta = (
            prop::sample::select(vec![
                None,
                Some("\"assistant\""),
                Some("\"tool\""),
                Some("null"),
            ]),
            text.clone(),
            text.clone(),
            text,
        )
            .prop_map(|(role, content, reasoning, refusal)| {
                let mut fields = vec![
                    format!("\"content\":{content}"),
                    format!("\"reasoning_content\":{reasoning}"),
                    format!("\"refusal\":{refusal}"),
                ];
                if let Some(role) = role {
                    fields.push(format!("\"role\":{role}"));
                }
                format!("{{{}}}", fields.join(","))
            });
        let finish = prop::sample::select(vec!["null", "\"stop\"", "\"length\"", "\"tool_calls\""]);
        let extra = prop::sample::select(vec![
            "",
            ",\"native_finish_reason\":null",
            ",\"x\":{\"a\":[1,-2.5e3,true,false,null,\"\\u0041\"]}",
        ]);
        let choice = (0u32..3, delta, finish, extra).prop_map(|(index, delta, finish, extra)| {
            format!("{{\"index\":{index},\"delta\":{delta},\"finish_reason\":{finish}{extra}}}")
        });
        let usage = prop_oneof![
            Just(String::new()),
            Just(",\"usage\":null".to_owned()),
            (any::<u32>(), any::<u32>(), prop::sample::select(vec!["", ",\"x\":[0.5]"])).prop_map(
                |(prompt, completion, extra)| {
                    let total = u64::from(prompt) + u64::from(completion);
                    format!(",\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{total}{extra}}}")
                }
            ),
        ];
        (
            prop::collection::vec(choice, 0..3),
            // Nineteen digits at most: longer numbers are left to serde.
            0u64..10_000_000_000_000_000_000,
            usage,
            prop::sample::select(vec!["", " ", "\n  "]),
        )
            .prop_map(|(choices, created, usage, space)| {
                format!(
                    "{{{space}\"id\":\"gen-1\",{space}\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"m\",\"choices\":[{}]{usage}{space}}}",
                    choices.join(&format!(",{space}"))
                )
            })
    }

    #[test]
    fn json_from_bytes_takes_and_refuses_what_from_slice_does() {
        let good = r#"{"choices":[{"delta":{"content":"\u00e9 é"}}]}"#.as_bytes();
        let ours: serde_json::Value = from_json_bytes(good).unwrap();
        let theirs: serde_json::Value = serde_json::from_slice(good).unwrap();
        assert_eq!(ours, theirs);
        for bad in [&b"{\"a\":\"\xff\"}"[..], b"{\"a\":1}\xff", b"{\"a\":}"] {
            assert!(serde_json::from_slice::<serde_json::Value>(bad).is_err());
            assert!(from_json_bytes::<serde_json::Value>(bad).is_err());
        }
        let error = from_json_bytes::<serde_json::Value>(b"{\"a\":\"\xff\"}").unwrap_err();
        assert_eq!(error.to_string(), "invalid UTF-8 at byte 6");
    }

    proptest! {
        #[test]
        fn generated_chunks_read_the_same_as_with_serde(text in chunk_text()) {
            prop_assert!(read_chunk(&text).is_some(), "fast path refused {}", text);
            agrees(&text)?;
        }

        #[test]
        fn mutated_chunks_never_disagree_with_serde(
            text in chunk_text(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"{}[]\",:\\ \n\t\x010-.enu".to_vec()),
            remove in any::<bool>(),
        ) {
            let mut bytes = text.into_bytes();
            let at = at.index(bytes.len());
            if remove {
                bytes.remove(at);
            } else {
                bytes.insert(at, byte);
            }
            if let Ok(text) = String::from_utf8(bytes) {
                agrees(&text)?;
            }
        }

        #[test]
        fn the_plain_run_ends_at_the_first_quote_backslash_or_control(
            bytes in prop::collection::vec(prop::sample::select(b"ab \"\\\x00\x1f\x20\x7f\x80\xff!#[]".to_vec()), 0..40),
        ) {
            let expected = bytes
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .unwrap_or(bytes.len());
            prop_assert_eq!(plain_prefix(&bytes), expected);
        }

        #[test]
        fn arbitrary_text_never_disagrees_with_serde(text in ".{0,64}") {
            agrees(&text)?;
        }
    }
}

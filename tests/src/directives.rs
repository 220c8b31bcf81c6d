//! `#directives` in the last user message, which choose how the fake answers.
//!
//! | directive | effect |
//! |---|---|
//! | `#chunks=N` | reply with N content events `tok0 `, `tok1 `, … |
//! | `#slow_chunks=MS` | pause MS milliseconds between events |
//! | `#slow_first=MS` | pause MS milliseconds before the response headers |
//! | `#think` | a reasoning event `Let me think.` before the content |
//! | `#tool` | one tool call `{"city":"Oslo"}` instead of text |
//! | `#noid` | with `#tool` on Ollama: leave out the call id |
//! | `#cite` | OpenAI-style flavours: two `url_citation` annotations (one per event when streamed) |
//! | `#fault=STATUS` | that HTTP status with the flavour's error body (429 adds `Retry-After: 7`) |
//! | `#fault=context` | a 400 for a prompt over the context length (OpenAI names it with `code` and `param`) |
//! | `#fault=midstream` | two content events, then the flavour's mid-stream error |
//! | `#fault=early` | the stream's opening events, then the mid-stream error before any content |
//! | `#fault=drop` | two content events, then abort the connection |
//! | `#fault=garbage` | two content events, then a line that is not JSON, then a clean close |
//!
//! Unknown `#tokens` are stripped and ignored. A model with a canned answer
//! (`POST /_fake/canned`) takes its directives from the canned entry instead.

use std::time::Duration;

/// What to do instead of a normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    Status(u16),
    /// A 400 for a prompt longer than the model's context.
    ContextLength,
    Midstream,
    /// The mid-stream error before any content event.
    Early,
    Drop,
    Garbage,
}

/// Parsed directives plus the prompt text left once they are stripped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub prompt: String,
    pub chunks: Option<usize>,
    pub slow_chunks: Option<Duration>,
    pub slow_first: Option<Duration>,
    pub think: bool,
    pub tool: bool,
    pub noid: bool,
    pub cite: bool,
    pub fault: Option<Fault>,
    /// A canned answer that replaces the echo.
    pub canned: Option<String>,
}

impl Directives {
    pub(crate) fn parse(text: &str) -> Self {
        let mut d = Self::default();
        let mut words = Vec::new();
        for token in text.split_whitespace() {
            let Some(directive) = token.strip_prefix('#') else {
                words.push(token);
                continue;
            };
            let (name, value) = directive.split_once('=').unwrap_or((directive, ""));
            let millis = || value.parse::<u64>().ok().map(Duration::from_millis);
            match name {
                "chunks" => d.chunks = value.parse().ok(),
                "slow_chunks" => d.slow_chunks = millis(),
                "slow_first" => d.slow_first = millis(),
                "think" => d.think = true,
                "tool" => d.tool = true,
                "noid" => d.noid = true,
                "cite" => d.cite = true,
                "fault" => d.fault = parse_fault(value),
                _ => {}
            }
        }
        d.prompt = words.join(" ");
        d
    }
}

fn parse_fault(value: &str) -> Option<Fault> {
    match value {
        "midstream" => Some(Fault::Midstream),
        "early" => Some(Fault::Early),
        "drop" => Some(Fault::Drop),
        "garbage" => Some(Fault::Garbage),
        "context" => Some(Fault::ContextLength),
        _ => value
            .parse::<u16>()
            .ok()
            .filter(|code| (100..=999).contains(code))
            .map(Fault::Status),
    }
}

/// Splits text into words, each keeping its trailing whitespace.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            out.push(std::mem::take(&mut current));
            in_space = false;
        }
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_directives_and_prompt() {
        let d = Directives::parse("  hi #chunks=3 there\n#fault=429 #think #bogus");
        assert_eq!(d.prompt, "hi there");
        assert_eq!(d.chunks, Some(3));
        assert_eq!(d.fault, Some(Fault::Status(429)));
        assert!(d.think);
        assert!(!d.tool);
        assert_eq!(
            Directives::parse("#fault=midstream").fault,
            Some(Fault::Midstream)
        );
        assert_eq!(
            Directives::parse("#slow_chunks=5").slow_chunks,
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn words_keep_trailing_space() {
        assert_eq!(
            words("Hello from ollama! You said: hi"),
            ["Hello ", "from ", "ollama! ", "You ", "said: ", "hi"]
        );
        assert_eq!(words("said: "), ["said: "]);
    }
}

//! OpenAI Chat Completions wire types: the contract the proxy serves.
//!
//! Request types keep every field the caller sent and nothing else: sampling
//! fields are `Option`s skipped when unset (trap 5), and unknown top-level keys
//! are kept in `extra` so OpenAI-compatible upstreams receive them verbatim.
//! Chunk types parse only the fields the proxy understands, which keeps the
//! per-chunk hot path cheap.
//!
//! Reasoning text is exposed at the edge as `reasoning_content` (the Kimi and
//! DeepSeek name); OpenRouter's and Ollama's `reasoning` is renamed to it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    /// Shared: the upstream call, the captured conversation and the post
    /// hooks all hold it (a plugin changing it takes its own copy first).
    pub messages: Arc<Vec<Message>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Every other key the caller sent (`logprobs`, `metadata`, Kimi `thinking`,
    /// OpenRouter `reasoning`/`provider`, ...), forwarded verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Longest model id accepted. The id is kept with every chat (observer,
/// metrics), so it is bounded like any other stored client text.
pub const MAX_MODEL_ID: usize = 256;

/// Refuses a model id past [`MAX_MODEL_ID`] (chats and fan-out alike).
pub fn check_model_id(model: &str) -> Result<(), String> {
    if model.len() > MAX_MODEL_ID {
        return Err(format!(
            "`model` is {} bytes, more than the {MAX_MODEL_ID} a model id may have",
            model.len()
        ));
    }
    Ok(())
}

impl ChatRequest {
    /// Whether the caller asked for a stream.
    pub fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether the caller asked for the final usage chunk.
    pub fn wants_usage(&self) -> bool {
        self.is_stream()
            && self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage == Some(true))
    }

    /// `thinking.type` (`enabled`, `adaptive`, `disabled`), the switch Claude
    /// and Kimi read from the same key.
    pub fn thinking_type(&self) -> Option<&str> {
        self.extra.get("thinking")?.get("type")?.as_str()
    }

    /// The stop sequences, `None` when unset or stopping at nothing (`""`, `[]`).
    pub fn stop_sequences(&self) -> Option<Vec<String>> {
        self.stop
            .as_ref()
            .filter(|stop| !stop.is_empty())
            .map(Stop::to_vec)
    }

    /// The token limit the caller set, whichever field carried it.
    pub fn token_limit(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Checks what serde cannot: the rules a request must meet before any upstream sees it.
    pub fn validate(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("`model` must be a non-empty string".into());
        }
        check_model_id(&self.model)?;
        if self.messages.is_empty() {
            return Err("`messages` must hold at least one message".into());
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(format!("`temperature` must be between 0 and 2, got {t}"));
        }
        if let Some(p) = self.top_p
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("`top_p` must be between 0 and 1, got {p}"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            if m.role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "messages[{i}]: a `tool` message needs `tool_call_id`"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

/// One entry of `messages`.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: Role,
    /// A string, an array of parts, or `null` (assistant messages with tool calls).
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Kept on assistant messages so thinking upstreams (Kimi) get it back (trap 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Other keys (OpenRouter `reasoning_details`, `refusal`, ...), forwarded verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Message {
    /// A plain text message.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
            reasoning_content: None,
            extra: Map::new(),
        }
    }

    /// The text of the message: the string, or its text parts joined by newlines.
    pub fn text_content(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let texts: Vec<&str> = parts.iter().filter_map(ContentPart::text).collect();
                texts.join("\n")
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One element of an array `content`: `text`, `image_url`, `input_audio`, `file`, ...
#[derive(Debug, Clone, Serialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ContentPart {
    /// The `file` of a `{"type":"file","file":{..}}` part.
    pub fn file(&self) -> Option<FileRef<'_>> {
        if self.kind != "file" {
            return None;
        }
        let file = self.extra.get("file")?;
        let field = |key: &str| file.get(key).and_then(Value::as_str);
        Some(FileRef {
            file_data: field("file_data"),
            file_id: field("file_id"),
            filename: field("filename"),
        })
    }

    pub fn text(&self) -> Option<&str> {
        if self.kind == "text" {
            self.text.as_deref()
        } else {
            None
        }
    }
}

/// Implements `Deserialize` for a struct in one pass: the listed fields are
/// read by key, every other key is kept in the struct's `extra` map. A derive
/// with `#[serde(flatten)]` would first copy the whole object (every string of
/// every message) into serde's buffer and read it from there. Required fields
/// must be present; optional ones are `Option`s, absent or `null`; `lists`
/// are read as [`non_empty`] reads them.
macro_rules! deserialize_with_extra {
    (
        $ty:ident, $expecting:literal,
        required { $($req:ident: $req_key:literal),* $(,)? },
        optional { $($opt:ident: $opt_key:literal),* $(,)? }
        $(, lists { $($list:ident: $list_key:literal),* $(,)? })? $(,)?
    ) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Fields;
                impl<'de> serde::de::Visitor<'de> for Fields {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }

                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$ty, A::Error> {
                        $(let mut $req = None;)*
                        $(let mut $opt = None;)*
                        $($(let mut $list: Option<Option<Vec<serde_json::Value>>> = None;)*)?
                        let mut extra = serde_json::Map::new();
                        while let Some(key) = map.next_key::<$crate::openai::Key<'de>>()? {
                            match key.as_str() {
                                $($req_key => {
                                    if $req.is_some() {
                                        return Err(<A::Error as serde::de::Error>::duplicate_field($req_key));
                                    }
                                    $req = Some(map.next_value()?);
                                })*
                                $($opt_key => {
                                    if $opt.is_some() {
                                        return Err(<A::Error as serde::de::Error>::duplicate_field($opt_key));
                                    }
                                    $opt = Some(map.next_value()?);
                                })*
                                $($($list_key => {
                                    if $list.is_some() {
                                        return Err(<A::Error as serde::de::Error>::duplicate_field($list_key));
                                    }
                                    $list = Some($crate::openai::non_empty(map.next_value()?));
                                })*)?
                                _ => {
                                    extra.insert(key.into_string(), map.next_value()?);
                                }
                            }
                        }
                        Ok($ty {
                            $($req: $req.ok_or_else(|| <A::Error as serde::de::Error>::missing_field($req_key))?,)*
                            $($opt: $opt.unwrap_or(None),)*
                            $($($list: $list.unwrap_or(None),)*)?
                            extra,
                        })
                    }
                }
                deserializer.deserialize_map(Fields)
            }
        }
    };
}
pub(crate) use deserialize_with_extra;

/// An object key, borrowed from the input when it holds no escapes.
pub(crate) struct Key<'de>(std::borrow::Cow<'de, str>);

impl Key<'_> {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn into_string(self) -> String {
        self.0.into_owned()
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key.to_owned())))
            }

            fn visit_string<E>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

deserialize_with_extra!(
    ChatRequest,
    "a chat completion request object",
    required {
        model: "model",
        messages: "messages"
    },
    optional {
        stream: "stream",
        stream_options: "stream_options",
        tools: "tools",
        tool_choice: "tool_choice",
        parallel_tool_calls: "parallel_tool_calls",
        temperature: "temperature",
        top_p: "top_p",
        max_tokens: "max_tokens",
        max_completion_tokens: "max_completion_tokens",
        stop: "stop",
        n: "n",
        response_format: "response_format",
        seed: "seed",
        frequency_penalty: "frequency_penalty",
        presence_penalty: "presence_penalty",
        reasoning_effort: "reasoning_effort",
        user: "user",
    },
);

deserialize_with_extra!(
    StreamOptions,
    "a stream_options object",
    required {},
    optional {
        include_usage: "include_usage"
    },
);

deserialize_with_extra!(
    Message,
    "a message object",
    required { role: "role" },
    optional {
        content: "content",
        name: "name",
        tool_calls: "tool_calls",
        tool_call_id: "tool_call_id",
        reasoning_content: "reasoning_content",
    },
);

deserialize_with_extra!(
    ContentPart,
    "a content part object",
    required { kind: "type" },
    optional {
        text: "text",
        image_url: "image_url"
    },
);

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> serde::de::Visitor<'de> for ContentVisitor {
            type Value = Content;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E>(self, text: &str) -> Result<Content, E> {
                Ok(Content::Text(text.to_owned()))
            }

            fn visit_string<E>(self, text: String) -> Result<Content, E> {
                Ok(Content::Text(text))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                let parts = Vec::<ContentPart>::deserialize(
                    serde::de::value::SeqAccessDeserializer::new(seq),
                )?;
                Ok(Content::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An image given as a `data:` URI, split into its media type and base64 payload.
pub struct DataUri<'a> {
    pub media_type: &'a str,
    pub base64: &'a str,
}

impl<'a> DataUri<'a> {
    /// `data:<media type>;base64,<payload>`, or `None` for anything else.
    pub fn parse(uri: &'a str) -> Option<Self> {
        let rest = uri.strip_prefix("data:")?;
        let (meta, payload) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        Some(Self {
            media_type,
            base64: payload,
        })
    }
}

impl ImageUrl {
    pub fn as_data_uri(&self) -> Option<DataUri<'_>> {
        DataUri::parse(&self.url)
    }
}

/// A `file` content part's `file` object: the file inline (`file_data`, a
/// base64 `data:` URI) or an OpenAI file id, and its name.
pub struct FileRef<'a> {
    pub file_data: Option<&'a str>,
    pub file_id: Option<&'a str>,
    pub filename: Option<&'a str>,
}

/// What kind of tool a definition, a choice or a call is about.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolKind {
    /// Called with JSON arguments to its `parameters` schema.
    #[default]
    Function,
    /// Called with free-form text (optionally to a grammar): OpenAI's
    /// `custom` tools.
    Custom,
}

impl ToolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Function => "function",
            Self::Custom => "custom",
        }
    }
}

/// One entry of `tools`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Tool {
    Function { function: FunctionDef },
    Custom { custom: CustomToolDef },
}

impl Tool {
    pub fn name(&self) -> &str {
        match self {
            Self::Function { function } => &function.name,
            Self::Custom { custom } => &custom.name,
        }
    }

    pub fn kind(&self) -> ToolKind {
        match self {
            Self::Function { .. } => ToolKind::Function,
            Self::Custom { .. } => ToolKind::Custom,
        }
    }

    /// Whether `choice` lets the model call this tool.
    pub fn allowed_by(&self, choice: Option<&ToolChoice>) -> bool {
        match choice {
            Some(ToolChoice::Allowed { tools, .. }) => tools.iter().any(|t| t.names(self)),
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A `custom` tool: its input is text, unconstrained (`format` absent or
/// `{"type":"text"}`) or to a grammar (`{"type":"grammar","grammar":{..}}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CustomToolDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
}

/// `tool_choice`.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// `"none"`, `"auto"` or `"required"`.
    Mode(String),
    /// This one tool must be called: `{"type":"function","function":{"name"}}`
    /// or `{"type":"custom","custom":{"name"}}`.
    Named(ToolRef),
    /// `{"type":"allowed_tools","allowed_tools":{"mode","tools"}}`: only these
    /// of `tools` may be called; `mode` is `auto` (or answer in text) or
    /// `required` (call one of them). The tool list itself stays whole, so a
    /// prompt cache over it still holds.
    Allowed { mode: String, tools: Vec<ToolRef> },
}

impl ToolChoice {
    pub fn is_none(&self) -> bool {
        matches!(self, ToolChoice::Mode(m) if m == "none")
    }

    /// Whether a tool must be called: `required`, a named tool, or allowed
    /// tools in `required` mode.
    pub fn is_required(&self) -> bool {
        match self {
            Self::Mode(m) | Self::Allowed { mode: m, .. } => m == "required",
            Self::Named(_) => true,
        }
    }
}

/// A tool named by kind and name, as `tool_choice` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRef {
    pub kind: ToolKind,
    pub name: String,
}

impl ToolRef {
    /// Whether this names `tool` (same kind and name).
    pub fn names(&self, tool: &Tool) -> bool {
        self.kind == tool.kind() && self.name == tool.name()
    }

    /// `{"type":"function","function":{"name"}}` (or `custom`).
    fn to_value(&self) -> Value {
        let kind = self.kind.as_str();
        serde_json::json!({ "type": kind, kind: { "name": self.name } })
    }

    fn from_value(value: &Value, at: &str) -> Result<Self, String> {
        let kind = match value.get("type").and_then(Value::as_str) {
            Some("function") => ToolKind::Function,
            Some("custom") => ToolKind::Custom,
            other => {
                return Err(format!(
                    "{at}: `type` must be \"function\" or \"custom\", got {}",
                    other.map_or_else(|| "nothing".to_owned(), |t| format!("{t:?}"))
                ));
            }
        };
        let name = value
            .get(kind.as_str())
            .and_then(|named| named.get("name"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{at}: needs `{}.name`", kind.as_str()))?;
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Mode(mode) => serializer.serialize_str(mode),
            Self::Named(tool) => tool.to_value().serialize(serializer),
            Self::Allowed { mode, tools } => serde_json::json!({
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": mode,
                    "tools": tools.iter().map(ToolRef::to_value).collect::<Vec<_>>(),
                },
            })
            .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = Value::deserialize(deserializer)?;
        if let Value::String(mode) = value {
            return Ok(Self::Mode(mode));
        }
        if value.get("type").and_then(Value::as_str) != Some("allowed_tools") {
            return ToolRef::from_value(&value, "tool_choice")
                .map(Self::Named)
                .map_err(D::Error::custom);
        }
        let allowed = value.get("allowed_tools").ok_or_else(|| {
            D::Error::custom("tool_choice of type allowed_tools needs an `allowed_tools` object")
        })?;
        let mode = allowed
            .get("mode")
            .and_then(Value::as_str)
            .filter(|m| matches!(*m, "auto" | "required"))
            .ok_or_else(|| {
                D::Error::custom("tool_choice.allowed_tools.mode must be \"auto\" or \"required\"")
            })?;
        let tools = allowed
            .get("tools")
            .and_then(Value::as_array)
            .ok_or_else(|| D::Error::custom("tool_choice.allowed_tools needs a `tools` list"))?
            .iter()
            .enumerate()
            .map(|(i, t)| ToolRef::from_value(t, &format!("tool_choice.allowed_tools.tools[{i}]")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(D::Error::custom)?;
        Ok(Self::Allowed {
            mode: mode.to_owned(),
            tools,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }
    }

    /// Whether it stops at nothing (`""` or `[]`), as if unset.
    pub fn is_empty(&self) -> bool {
        match self {
            Stop::One(s) => s.is_empty(),
            Stop::Many(v) => v.iter().all(String::is_empty),
        }
    }
}

/// A complete tool call, as it appears in messages and non-stream responses:
/// `{"id","type":"function","function":{"name","arguments"}}` or
/// `{"id","type":"custom","custom":{"name","input"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub kind: ToolKind,
    pub name: String,
    /// A function's arguments (a JSON string, as OpenAI sends them) or a
    /// custom tool's input text.
    pub arguments: String,
}

impl ToolCall {
    pub fn function(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: ToolKind::Function,
            name: name.into(),
            arguments: arguments.into(),
        }
    }
}

/// The named pieces of a call (`function` or `custom`) as written.
#[derive(Serialize)]
struct CallBody<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<&'a str>,
}

impl Serialize for ToolCall {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut call = serializer.serialize_struct("ToolCall", 3)?;
        call.serialize_field("id", &self.id)?;
        call.serialize_field("type", self.kind.as_str())?;
        let (name, payload) = (self.name.as_str(), Some(self.arguments.as_str()));
        match self.kind {
            ToolKind::Function => call.serialize_field(
                "function",
                &CallBody {
                    name,
                    arguments: payload,
                    input: None,
                },
            )?,
            ToolKind::Custom => call.serialize_field(
                "custom",
                &CallBody {
                    name,
                    arguments: None,
                    input: payload,
                },
            )?,
        }
        call.end()
    }
}

/// [`ToolCall`] as it comes: the key holding its name and payload depends on `type`.
#[derive(Deserialize)]
struct ToolCallWire {
    id: String,
    /// A type other than `custom` (or none) is read as a function call, as
    /// before custom tools: a new kind of call must not fail a whole answer.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    function: Option<FunctionCallWire>,
    #[serde(default)]
    custom: Option<CustomCallWire>,
}

#[derive(Deserialize)]
struct FunctionCallWire {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
struct CustomCallWire {
    name: String,
    #[serde(default)]
    input: String,
}

impl<'de> Deserialize<'de> for ToolCall {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = ToolCallWire::deserialize(deserializer)?;
        let kind = match wire.kind.as_deref() {
            Some("custom") => ToolKind::Custom,
            _ => ToolKind::Function,
        };
        let (name, arguments) = match (kind, wire.function, wire.custom) {
            (ToolKind::Function, Some(f), _) => (f.name, f.arguments),
            (ToolKind::Custom, _, Some(c)) => (c.name, c.input),
            (kind, _, _) => {
                let key = kind.as_str();
                return Err(D::Error::custom(format!(
                    "a `{key}` tool call needs `{key}` with its `name`"
                )));
            }
        };
        Ok(Self {
            id: wire.id,
            kind,
            name,
            arguments,
        })
    }
}

/// Token counts, in OpenAI's names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "UsageWire")]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// OpenRouter's `cost`, when the upstream reports one. Boxed, like every
    /// rare `Value` on a chunk: a `Value` takes 80 bytes, and chunks are
    /// built and moved through every stream layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Box<Value>>,
}

/// [`Usage`] as upstreams send it: Kimi may count cached prompt tokens in a
/// top-level `cached_tokens` rather than in `prompt_tokens_details`.
#[derive(Deserialize)]
struct UsageWire {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionTokensDetails>,
    #[serde(default)]
    cost: Option<Box<Value>>,
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<UsageWire> for Usage {
    fn from(wire: UsageWire) -> Self {
        let prompt_tokens_details = wire.prompt_tokens_details.or(wire
            .cached_tokens
            .map(|cached_tokens| PromptTokensDetails { cached_tokens }));
        Self {
            prompt_tokens: wire.prompt_tokens,
            completion_tokens: wire.completion_tokens,
            total_tokens: wire.total_tokens,
            prompt_tokens_details,
            completion_tokens_details: wire.completion_tokens_details,
            cost: wire.cost,
        }
    }
}

impl Usage {
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    #[serde(default)]
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    #[serde(default)]
    pub reasoning_tokens: u64,
}

/// One `chat.completion.chunk` event.
///
/// An upstream's `id`, `object` and `model` are not read: every chunk is
/// stamped with the proxy's id and the caller's model id on its way out
/// (`stream::normalize`), and reading them cost allocations per chunk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatChunk {
    #[serde(default, skip_deserializing)]
    pub id: SharedStr,
    #[serde(skip_deserializing)]
    pub object: ChunkObject,
    #[serde(default)]
    pub created: u64,
    #[serde(default, skip_deserializing)]
    pub model: SharedStr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Mid-stream error some upstreams put on the chunk (OpenRouter); never sent downstream.
    #[serde(default, skip_serializing)]
    pub error: Option<Box<Value>>,
    /// Annotations added by the proxy (retrieval sources); ignored by OpenAI clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lakehouse: Option<Box<Value>>,
}

/// A string every chunk of one response repeats (its id, its model): stamping
/// a chunk with it is a reference count, not an allocation and a copy. The
/// default is the empty string, which holds nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedStr(Option<std::sync::Arc<str>>);

impl SharedStr {
    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or_default()
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        Self(Some(s.into()))
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        Self(Some(s.into()))
    }
}

impl std::ops::Deref for SharedStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for SharedStr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for SharedStr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A chunk's `object`, always `"chat.completion.chunk"`: no room, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkObject;

impl Serialize for ChunkObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("chat.completion.chunk")
    }
}

impl ChatChunk {
    /// A chunk with one choice at index 0 carrying `delta`.
    pub fn delta(delta: Delta) -> Self {
        Self {
            choices: vec![ChunkChoice {
                delta,
                ..ChunkChoice::default()
            }],
            ..Self::default()
        }
    }

    /// A chunk that ends choice 0 with `finish_reason`, optionally carrying usage.
    pub fn finish(reason: FinishReason, usage: Option<Usage>) -> Self {
        Self {
            choices: vec![ChunkChoice {
                finish_reason: Some(reason),
                ..ChunkChoice::default()
            }],
            usage,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    /// Always present (`null` until the last chunk of the choice).
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Box<Value>>,
    /// Kimi puts usage here on the finish chunk; moved to the top level.
    #[serde(default, skip_serializing)]
    pub usage: Option<Usage>,
    /// Some upstreams put a mid-stream error inside the choice.
    #[serde(default, skip_serializing)]
    pub error: Option<Box<Value>>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// OpenRouter / Ollama-compat name for reasoning text; folded into `reasoning_content`.
    #[serde(default, skip_serializing)]
    pub reasoning: Option<String>,
    /// Structured reasoning (OpenRouter's `reasoning.text` / `.summary` /
    /// `.encrypted` items, Claude's signed thinking): what a client sends back
    /// on the assistant message so the model gets its own reasoning again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_details: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// Every other key (`annotations` with a search model's citations,
    /// OpenRouter's generated `images`, `audio`, ...), passed on as it came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(
    Delta,
    "a delta object",
    required {},
    optional {
        role: "role",
        content: "content",
        reasoning_content: "reasoning_content",
        reasoning: "reasoning",
        tool_calls: "tool_calls",
        refusal: "refusal",
    },
    lists {
        reasoning_details: "reasoning_details"
    },
);

/// A list, `None` when `null` or empty (OpenRouter sends
/// `reasoning_details: []` on every chunk, which says nothing), or not a list
/// at all: an optional field of unknown shape must not fail a whole answer.
pub(crate) fn non_empty(value: Value) -> Option<Vec<Value>> {
    match value {
        Value::Array(items) if !items.is_empty() => Some(items),
        _ => None,
    }
}

impl Delta {
    pub fn content(text: impl Into<String>) -> Self {
        Self {
            content: Some(text.into()),
            ..Self::default()
        }
    }

    pub fn reasoning(text: impl Into<String>) -> Self {
        Self {
            reasoning_content: Some(text.into()),
            ..Self::default()
        }
    }

    /// Structured reasoning items (see [`Delta::reasoning_details`]).
    pub fn reasoning_items(items: Vec<Value>) -> Self {
        Self {
            reasoning_details: Some(items),
            ..Self::default()
        }
    }

    pub fn tool_call(call: ToolCallDelta) -> Self {
        Self {
            tool_calls: Some(vec![call]),
            ..Self::default()
        }
    }
}

/// A piece of a streamed tool call; pieces are joined by `index`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// [`ToolCallDelta::UNINDEXED`] when an upstream sent none (Gemini's
    /// OpenAI-compatible API); the adapter then numbers the calls.
    #[serde(default = "ToolCallDelta::unindexed")]
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    /// A custom tool's call: its name, then pieces of its input text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomCallDelta>,
}

impl ToolCallDelta {
    /// The index of a piece that came without one.
    pub const UNINDEXED: u32 = u32::MAX;

    fn unindexed() -> u32 {
        Self::UNINDEXED
    }

    /// The first fragment of a function call: id, name and (possibly empty) arguments.
    pub fn start(index: u32, id: String, name: String, arguments: String) -> Self {
        Self::opening(index, id, ToolKind::Function, name, arguments)
    }

    /// The first fragment of a call of either kind: id, name and the
    /// (possibly empty) start of its arguments or input.
    pub fn opening(index: u32, id: String, kind: ToolKind, name: String, payload: String) -> Self {
        let mut call = Self::piece(index, kind, payload);
        call.id = Some(id);
        call.kind = Some(kind.as_str().into());
        match (&mut call.function, &mut call.custom) {
            (Some(f), _) => f.name = Some(name),
            (_, Some(c)) => c.name = Some(name),
            _ => {}
        }
        call
    }

    /// A later fragment of a function call: only an arguments piece.
    pub fn arguments(index: u32, piece: String) -> Self {
        Self::piece(index, ToolKind::Function, piece)
    }

    /// A later fragment: a piece of a function's arguments or a custom tool's input.
    pub fn piece(index: u32, kind: ToolKind, piece: String) -> Self {
        let (function, custom) = match kind {
            ToolKind::Function => (
                Some(FunctionCallDelta {
                    name: None,
                    arguments: Some(piece),
                }),
                None,
            ),
            ToolKind::Custom => (
                None,
                Some(CustomCallDelta {
                    name: None,
                    input: Some(piece),
                }),
            ),
        };
        Self {
            index,
            id: None,
            kind: None,
            function,
            custom,
        }
    }
}

/// A piece of a streamed custom tool call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
    /// OpenRouter's mid-stream failure marker; turned into an error, never sent as a finish.
    Error,
}

impl FinishReason {
    /// The reason an upstream names. Ones outside OpenAI's set (DeepSeek's
    /// `insufficient_system_resource`, GLM's `sensitive`, ...) are `stop`:
    /// the answer ended, and refusing the chunk would fail a finished answer.
    pub fn from_name(name: &str) -> Self {
        match name {
            "length" => Self::Length,
            "tool_calls" => Self::ToolCalls,
            "content_filter" => Self::ContentFilter,
            "function_call" => Self::FunctionCall,
            "error" => Self::Error,
            _ => Self::Stop,
        }
    }
}

impl<'de> Deserialize<'de> for FinishReason {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = FinishReason;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a finish reason")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<FinishReason, E> {
                Ok(FinishReason::from_name(name))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// Non-stream `chat.completion` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lakehouse: Option<Value>,
}

impl ChatCompletion {
    /// The text of the first choice, or "" when it has none.
    pub fn first_text(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: Option<FinishReason>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseMessage {
    pub role: Role,
    /// `null` when the reply is only tool calls.
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// See [`Delta::reasoning_details`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_details: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// See [`Delta::extra`].
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

deserialize_with_extra!(
    ResponseMessage,
    "a message object",
    required { role: "role" },
    optional {
        content: "content",
        reasoning_content: "reasoning_content",
        tool_calls: "tool_calls",
        refusal: "refusal",
    },
    lists {
        reasoning_details: "reasoning_details"
    },
);

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

impl ModelEntry {
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>, created: u64) -> Self {
        Self {
            id: id.into(),
            object: "model".into(),
            created,
            owned_by: owned_by.into(),
        }
    }
}

/// Seconds since the Unix epoch, for `created` fields.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Random characters in an id [`new_id`] makes.
const ID_CHARS: usize = 24;

/// A fresh id with a prefix, e.g. `call_3f9a...` or `chatcmpl-...`: 24
/// random letters and digits (about 142 bits).
pub fn new_id(prefix: &str) -> String {
    const ALPHANUMERIC: &[u8; 62] =
        b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    // Six bits of one 64-bit draw per character, ten characters a draw: every
    // chat makes an id, and a draw per character cost more than the rest of
    // the id. The slight lean of `% 62` towards the first two characters
    // does not matter for an id. Written as bytes and appended at once:
    // pushing each as a `char` cost ~25 instructions a character.
    let mut chars = [0u8; ID_CHARS];
    let mut bits = 0;
    for (i, c) in chars.iter_mut().enumerate() {
        if i % 10 == 0 {
            bits = fastrand::u64(..);
        }
        *c = ALPHANUMERIC[(bits & 63) as usize % 62];
        bits >>= 6;
    }
    let mut id = String::with_capacity(prefix.len() + ID_CHARS);
    id.push_str(prefix);
    // Letters and digits only, so this is always valid UTF-8.
    id.push_str(std::str::from_utf8(&chars).unwrap_or_default());
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_tools_their_calls_and_allowed_tools_read_and_write_as_openai_shapes() {
        let body = json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": "patch it"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch\n"}},
                    {"id": "c2", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}
            ],
            "tools": [
                {"type": "custom", "custom": {"name": "apply_patch", "description": "Edits files",
                 "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: /.+/"}}}},
                {"type": "function", "function": {"name": "f"}}
            ],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "required",
                "tools": [{"type": "custom", "custom": {"name": "apply_patch"}}]}}
        });
        let request: ChatRequest = serde_json::from_value(body.clone()).unwrap();
        let calls = request.messages[1].tool_calls.as_ref().unwrap();
        assert_eq!(calls[0].kind, ToolKind::Custom);
        assert_eq!(
            (calls[0].name.as_str(), calls[0].arguments.as_str()),
            ("apply_patch", "*** Begin Patch\n")
        );
        assert_eq!(calls[1], ToolCall::function("c2", "f", "{}"));
        let tools = request.tools.as_ref().unwrap();
        assert_eq!(
            (tools[0].kind(), tools[0].name()),
            (ToolKind::Custom, "apply_patch")
        );
        let choice = request.tool_choice.as_ref();
        assert!(choice.is_some_and(ToolChoice::is_required));
        assert!(tools[0].allowed_by(choice) && !tools[1].allowed_by(choice));
        // Written back as they came, for OpenAI-compatible upstreams.
        let written = serde_json::to_value(&request).unwrap();
        for key in ["messages", "tools", "tool_choice"] {
            assert_eq!(written[key], body[key], "{key}");
        }
        let named: ToolChoice =
            serde_json::from_value(json!({"type": "custom", "custom": {"name": "apply_patch"}}))
                .unwrap();
        assert_eq!(
            named,
            ToolChoice::Named(ToolRef {
                kind: ToolKind::Custom,
                name: "apply_patch".into()
            })
        );
    }

    #[test]
    fn malformed_tool_shapes_are_named_in_the_error() {
        let choice = |v: Value| {
            serde_json::from_value::<ToolChoice>(v)
                .unwrap_err()
                .to_string()
        };
        assert!(
            choice(json!({"type": "allowed_tools", "allowed_tools": {"mode": "any", "tools": []}}))
                .contains("mode must be \"auto\" or \"required\"")
        );
        assert!(
            choice(
                json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto",
            "tools": [{"type": "function"}]}})
            )
            .contains("tools[0]: needs `function.name`")
        );
        assert!(choice(json!({"type": "web_search"})).contains("`type` must be"));
        let call = serde_json::from_value::<ToolCall>(
            json!({"id": "c", "type": "custom", "function": {"name": "f"}}),
        );
        assert!(
            call.unwrap_err()
                .to_string()
                .contains("a `custom` tool call needs `custom`")
        );
        assert!(
            serde_json::from_value::<Tool>(json!({"type": "custom", "function": {"name": "f"}}))
                .is_err()
        );
        assert!(
            choice(json!({"type": "allowed_tools"})).contains("needs an `allowed_tools` object")
        );
        // A call of a kind unknown here, with a function, is read as one.
        let call: ToolCall = serde_json::from_value(
            json!({"id": "c", "type": "mcp", "function": {"name": "f", "arguments": "{}"}}),
        )
        .unwrap();
        assert_eq!(call, ToolCall::function("c", "f", "{}"));
    }

    #[test]
    fn kimis_top_level_cached_tokens_become_prompt_details() {
        let kimi: Usage = serde_json::from_value(
            json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11, "cached_tokens": 8}),
        )
        .unwrap();
        assert_eq!(
            kimi.prompt_tokens_details,
            Some(PromptTokensDetails { cached_tokens: 8 })
        );
        assert_eq!(
            serde_json::to_value(&kimi).unwrap(),
            json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11,
                   "prompt_tokens_details": {"cached_tokens": 8}})
        );
        // OpenAI's own field wins when an upstream sends both.
        let both: Usage = serde_json::from_value(
            json!({"prompt_tokens": 9, "prompt_tokens_details": {"cached_tokens": 3}, "cached_tokens": 8}),
        )
        .unwrap();
        assert_eq!(
            both.prompt_tokens_details,
            Some(PromptTokensDetails { cached_tokens: 3 })
        );
        let plain: Usage = serde_json::from_value(json!({"prompt_tokens": 9})).unwrap();
        assert_eq!(plain.prompt_tokens_details, None);
    }

    #[test]
    fn chunks_stay_small() {
        // Every chunk is built, then moved through each stream layer to the
        // edge. With its rare `Value`s unboxed (80 bytes each) it took 376.
        let size = std::mem::size_of::<ChatChunk>();
        assert!(size <= 200, "a ChatChunk takes {size} bytes");
    }

    #[test]
    fn ids_are_the_prefix_then_24_random_letters_and_digits() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_id("chatcmpl-")).collect();
        assert_eq!(ids.len(), 1000, "ids repeat");
        for id in &ids {
            let random = id.strip_prefix("chatcmpl-").unwrap();
            assert_eq!(random.len(), ID_CHARS);
            assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{id}");
        }
        // Every position varies (a draw per ten characters, none left unset).
        for position in 0..ID_CHARS {
            let seen: std::collections::HashSet<u8> = ids
                .iter()
                .map(|id| id.as_bytes()["chatcmpl-".len() + position])
                .collect();
            assert!(seen.len() > 40, "position {position}: {}", seen.len());
        }
    }

    #[test]
    fn unknown_keys_are_kept_at_every_level_and_unset_fields_are_never_sent() {
        let body = json!({
            "model": "kimi/kimi-k2.6",
            "messages": [
                {"role": "system", "content": "be brief", "x_note": 1},
                {"role": "user", "content": [
                    {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
                ]},
                {"role": "assistant", "content": null, "reasoning_content": "r",
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "content": "42", "tool_call_id": "c1"}
            ],
            "stream": true,
            "stream_options": {"include_usage": true, "continuous_usage_stats": false},
            "temperature": null,
            "thinking": {"type": "enabled"},
            "metadata": {"k": "v"}
        });
        let text = body.to_string();
        let request: ChatRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(request.model, "kimi/kimi-k2.6");
        assert_eq!(request.temperature, None);
        assert_eq!(request.extra["thinking"], json!({"type": "enabled"}));
        assert_eq!(request.messages[0].extra["x_note"], json!(1));
        let Some(Content::Parts(parts)) = &request.messages[1].content else {
            panic!("parts expected");
        };
        assert_eq!(parts[0].text(), Some("hi"));
        assert_eq!(
            parts[0].extra["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert!(request.messages[2].content.is_none());
        let options = request.stream_options.as_ref().unwrap();
        assert_eq!(options.include_usage, Some(true));
        assert_eq!(options.extra["continuous_usage_stats"], json!(false));

        let mut expected = body.clone();
        expected.as_object_mut().unwrap().remove("temperature");
        assert_eq!(serde_json::to_value(&request).unwrap(), expected);
        // The same from an already parsed value (owned keys and strings).
        let again: ChatRequest = serde_json::from_value(body).unwrap();
        assert_eq!(serde_json::to_value(&again).unwrap(), expected);
    }

    #[test]
    fn bad_requests_fail_with_the_reason() {
        let error = |text: &str| {
            serde_json::from_str::<ChatRequest>(text)
                .unwrap_err()
                .to_string()
        };
        assert!(error(r#"{"messages": []}"#).contains("missing field `model`"));
        assert!(
            error(r#"{"model": "a", "model": "b", "messages": []}"#)
                .contains("duplicate field `model`")
        );
        assert!(error(r#"["model"]"#).contains("a chat completion request object"));
        let bad_content = r#"{"model": "m", "messages": [{"role": "user", "content": 5}]}"#;
        assert!(error(bad_content).contains("a string or an array of content parts"));
        let no_role = r#"{"model": "m", "messages": [{"content": "hi"}]}"#;
        assert!(error(no_role).contains("missing field `role`"));
        let no_type =
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"text": "hi"}]}]}"#;
        assert!(error(no_type).contains("missing field `type`"));
    }

    #[test]
    fn escaped_keys_are_read_like_plain_ones() {
        let text =
            r#"{"mod\u0065l": "m", "messages": [{"role": "user", "content": "hi"}], "x\ty": 1}"#;
        let request: ChatRequest = serde_json::from_str(text).unwrap();
        assert_eq!(request.model, "m");
        assert_eq!(request.extra["x\ty"], json!(1));
    }
}

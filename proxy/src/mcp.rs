//! The store, memory and chat as MCP tools, with the official Rust SDK
//! (`rmcp`): over stdio (`lakehouse mcp`) and streamable HTTP (`/mcp`, behind
//! the same auth as `/admin`, since the tools read the store and write memory).
//!
//! Tools: `list_corpora`, `search_corpus` (with playbook boosts, as chats
//! rank), `sql_query` (the read-only SQL of `/admin/query`), `memory_search`,
//! `memory_add` and `chat` (one non-stream chat through the router and the
//! plugins). A tool that fails answers an error result the model can read;
//! bad arguments are a protocol error naming the problem.

use std::sync::Arc;

use axum::http::HeaderMap;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, Content, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerInfo, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::app::SharedState;
use crate::error::ApiError;

/// The MCP server: every tool works on the shared state.
#[derive(Clone)]
pub struct Tools {
    state: SharedState,
}

impl std::fmt::Debug for Tools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tools")
    }
}

impl Tools {
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// `/mcp`: streamable HTTP with sessions. Without auth the SDK's own check
/// keeps `Host` to loopback names (DNS rebinding); with tokens on, the
/// guard decides who gets in and any host is accepted.
pub fn http_service(state: SharedState) -> StreamableHttpService<Tools, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default();
    if state.auth.enabled() {
        config = config.disable_allowed_hosts();
    }
    let tools = Tools::new(state);
    StreamableHttpService::new(
        move || Ok(tools.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// `lakehouse mcp`: serves the tools on stdin/stdout until the client leaves.
pub async fn serve_stdio(state: SharedState) -> Result<(), String> {
    let running = Tools::new(state)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| format!("the MCP client did not initialize: {e}"))?;
    running
        .waiting()
        .await
        .map_err(|e| format!("the MCP server stopped: {e}"))?;
    Ok(())
}

fn schema(value: Value) -> Arc<Map<String, Value>> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => Arc::new(Map::new()),
    }
}

fn tool_list() -> Vec<Tool> {
    vec![
        Tool::new(
            "list_corpora",
            "List the corpora in the store with their row and vector counts.",
            schema(json!({"type": "object", "properties": {}})),
        ),
        Tool::new(
            "search_corpus",
            "Semantic search of one corpus: the k nearest rows with similarity, playbook boost and final score.",
            schema(json!({
                "type": "object",
                "properties": {
                    "corpus": {"type": "string", "description": "corpus name"},
                    "query": {"type": "string"},
                    "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5}
                },
                "required": ["corpus", "query"]
            })),
        ),
        Tool::new(
            "sql_query",
            "Read-only DuckDB SQL over the corpora (each is a view by its name). One SELECT or WITH statement.",
            schema(json!({
                "type": "object",
                "properties": {"sql": {"type": "string"}},
                "required": ["sql"]
            })),
        ),
        Tool::new(
            "memory_search",
            "Search pathway memory (live traces) of one namespace.",
            schema(json!({
                "type": "object",
                "properties": {
                    "namespace": {"type": "string"},
                    "query": {"type": "string"},
                    "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 5}
                },
                "required": ["namespace", "query"]
            })),
        ),
        Tool::new(
            "memory_add",
            "Add a trace to pathway memory.",
            schema(json!({
                "type": "object",
                "properties": {
                    "namespace": {"type": "string"},
                    "text": {"type": "string"},
                    "metadata": {"type": "object"}
                },
                "required": ["namespace", "text"]
            })),
        ),
        Tool::new(
            "chat",
            "Ask a model (id, tier/<name> or rag/<name>) one question through Lakehouse; returns the answer and its sources.",
            schema(json!({
                "type": "object",
                "properties": {
                    "model": {"type": "string"},
                    "prompt": {"type": "string"},
                    "system": {"type": "string"},
                    "corpora": {"type": "array", "items": {"type": "string"}}
                },
                "required": ["model", "prompt"]
            })),
        ),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchArgs {
    corpus: String,
    query: String,
    #[serde(default = "default_k")]
    k: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlArgs {
    sql: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatArgs {
    model: String,
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    corpora: Option<Vec<String>>,
}

fn default_k() -> usize {
    5
}

fn args<T: serde::de::DeserializeOwned>(
    tool: &str,
    arguments: Option<Map<String, Value>>,
) -> Result<T, McpError> {
    serde_json::from_value(Value::Object(arguments.unwrap_or_default()))
        .map_err(|e| McpError::invalid_params(format!("{tool}: {e}"), None))
}

impl Tools {
    async fn run(
        &self,
        request: CallToolRequestParams,
    ) -> Result<Result<Value, ApiError>, McpError> {
        let state = &self.state;
        let arguments = request.arguments;
        Ok(match request.name.as_ref() {
            "list_corpora" => {
                async {
                    let mut out = Vec::new();
                    for m in state.store.corpora().await? {
                        out.push(json!({
                            "name": m.name,
                            "rows": m.rows(),
                            "vectors": state.store.vector_count(&m.name).await,
                            "text_columns": m.settings.text_columns,
                        }));
                    }
                    Ok::<Value, ApiError>(Value::Array(out))
                }
                .await
            }
            "search_corpus" => {
                let a: SearchArgs = args("search_corpus", arguments)?;
                let k = a.k.clamp(1, 100);
                crate::routes::admin::search_with_boosts(state, &a.corpus, &a.query, k)
                    .await
                    .map(Value::Array)
            }
            "sql_query" => {
                let a: SqlArgs = args("sql_query", arguments)?;
                state
                    .store
                    .query(&a.sql)
                    .await
                    .map(|r| json!(r))
                    .map_err(ApiError::from)
            }
            "memory_search" => {
                let query: lakehouse_memory::pathway::SearchQuery =
                    args("memory_search", arguments)?;
                state
                    .pathway
                    .search(&query)
                    .await
                    .map(|hits| json!(hits))
                    .map_err(ApiError::from)
            }
            "memory_add" => {
                let new: lakehouse_memory::pathway::NewTrace = args("memory_add", arguments)?;
                state
                    .pathway
                    .add(new)
                    .await
                    .map(|trace| json!(trace))
                    .map_err(ApiError::from)
            }
            "chat" => {
                let a: ChatArgs = args("chat", arguments)?;
                self.chat(a).await
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("no tool named {other:?}"),
                    None,
                ));
            }
        })
    }

    async fn chat(&self, a: ChatArgs) -> Result<Value, ApiError> {
        let mut messages = Vec::new();
        if let Some(system) = a.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": a.prompt}));
        let mut body = json!({"model": a.model, "messages": messages});
        if let Some(corpora) = a.corpora {
            body["lakehouse"] = json!({"corpora": corpora});
        }
        let request = serde_json::from_value(body)
            .map_err(|e| ApiError::bad_request(format!("chat: {e}")))?;
        let started = crate::routes::chat::start(&self.state, &HeaderMap::new(), request).await?;
        let provider = started.provider.clone();
        let completion = started.complete().await?;
        Ok(json!({
            "id": completion.id,
            "model": completion.model,
            "provider": provider,
            "content": completion.first_text(),
            "sources": completion.lakehouse.as_ref().and_then(|l| l.get("sources")).cloned(),
            "usage": completion.usage,
        }))
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerInfo {
        ServerInfo::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("lakehouse", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Lakehouse: search the corpora, run read-only SQL over them, read and write \
                 pathway memory, and ask any routed model a question.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(tool_list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, McpError> {
        let name = request.name.to_string();
        Ok(match self.run(request).await? {
            Ok(value) => {
                let text = serde_json::to_string_pretty(&value)
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                CallToolResult::success(vec![Content::text(text)])
            }
            Err(e) => {
                tracing::info!(tool = %name, "MCP tool failed: {}", e.message);
                CallToolResult::error(vec![Content::text(e.body().to_string())])
            }
        })
    }
}

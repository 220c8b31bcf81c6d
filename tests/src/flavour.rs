//! Which upstream a path imitates, and which endpoint of it.

use axum::http::Method;

/// The upstream a path prefix imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    Ollama,
    OllamaCloud,
    OpenRouter,
    Kimi,
    Zen,
    OpenAi,
}

impl Flavour {
    /// The name used in the default reply (`Hello from <name>!`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Flavour::Ollama => "ollama",
            Flavour::OllamaCloud => "ollama_cloud",
            Flavour::OpenRouter => "openrouter",
            Flavour::Kimi => "kimi",
            Flavour::Zen => "zen",
            Flavour::OpenAi => "openai",
        }
    }
}

/// The endpoint within a flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Ollama `POST /api/chat`.
    OllamaChat,
    /// Ollama `GET /api/tags`.
    OllamaTags,
    /// OpenAI `POST .../chat/completions`.
    Chat,
    /// Anthropic `POST /v1/messages` (Zen).
    Messages,
    /// OpenAI Responses `POST /v1/responses` (Zen).
    Responses,
    /// `GET .../models`.
    Models,
    /// Ollama `POST /api/embed`.
    OllamaEmbed,
    /// OpenAI `POST .../embeddings`.
    Embeddings,
}

impl Endpoint {
    fn method(self) -> Method {
        match self {
            Endpoint::OllamaTags | Endpoint::Models => Method::GET,
            _ => Method::POST,
        }
    }
}

/// How a path resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Found(Flavour, Endpoint),
    WrongMethod,
    NotFound,
}

/// Maps a method and path to a flavour and endpoint.
pub(crate) fn route(method: &Method, path: &str) -> Route {
    let Some((flavour, endpoint)) = lookup(path) else {
        return Route::NotFound;
    };
    if *method == endpoint.method() {
        Route::Found(flavour, endpoint)
    } else {
        Route::WrongMethod
    }
}

fn lookup(path: &str) -> Option<(Flavour, Endpoint)> {
    let path = path.strip_prefix('/')?;
    let (prefix, rest) = path.split_once('/')?;
    let flavour = match prefix {
        "ollama" => Flavour::Ollama,
        "ollama_cloud" => Flavour::OllamaCloud,
        "openrouter" => Flavour::OpenRouter,
        "kimi" => Flavour::Kimi,
        "zen" => Flavour::Zen,
        "openai" => Flavour::OpenAi,
        _ => return None,
    };
    let endpoint = match (flavour, rest) {
        (Flavour::Ollama | Flavour::OllamaCloud, "api/chat") => Endpoint::OllamaChat,
        (Flavour::Ollama | Flavour::OllamaCloud, "api/tags") => Endpoint::OllamaTags,
        (Flavour::Ollama | Flavour::OllamaCloud, "api/embed") => Endpoint::OllamaEmbed,
        (Flavour::OpenRouter, "api/v1/embeddings") => Endpoint::Embeddings,
        (Flavour::OpenAi, "v1/embeddings") => Endpoint::Embeddings,
        (Flavour::OpenRouter, "api/v1/chat/completions") => Endpoint::Chat,
        (Flavour::OpenRouter, "api/v1/models") => Endpoint::Models,
        (Flavour::Kimi | Flavour::Zen | Flavour::OpenAi, "v1/chat/completions") => Endpoint::Chat,
        (Flavour::Kimi | Flavour::Zen | Flavour::OpenAi, "v1/models") => Endpoint::Models,
        (Flavour::Zen, "v1/messages") => Endpoint::Messages,
        (Flavour::Zen, "v1/responses") => Endpoint::Responses,
        _ => return None,
    };
    Some((flavour, endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_prefix() {
        assert_eq!(
            route(&Method::POST, "/ollama_cloud/api/chat"),
            Route::Found(Flavour::OllamaCloud, Endpoint::OllamaChat)
        );
        assert_eq!(
            route(&Method::GET, "/openrouter/api/v1/models"),
            Route::Found(Flavour::OpenRouter, Endpoint::Models)
        );
        assert_eq!(
            route(&Method::POST, "/zen/v1/messages"),
            Route::Found(Flavour::Zen, Endpoint::Messages)
        );
        assert_eq!(route(&Method::GET, "/zen/v1/responses"), Route::WrongMethod);
        assert_eq!(route(&Method::POST, "/kimi/v1/messages"), Route::NotFound);
    }
}

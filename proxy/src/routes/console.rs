//! `GET /admin`: the operator's web console, and its assets under `/admin/assets/`.
//!
//! One HTML page and a small script without dependencies, compiled into the
//! binary (no CDN, no build step). The page calls the same JSON API as every
//! other client, with the bearer token the operator types in, if any.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::error::ApiError;
use crate::routes::extract::Path;

const PAGE: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/app.js");
const STYLE: &str = include_str!("../console/app.css");

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "app.css" => ("text/css; charset=utf-8", STYLE),
        _ => {
            return ApiError::not_found("unknown_url", format!("no console asset {file:?}"))
                .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            // The assets change only with the binary; revalidating is cheap.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

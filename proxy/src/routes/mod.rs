//! HTTP handlers, one module per area.

pub mod admin;
pub mod body;
pub mod chat;
pub mod console;
pub mod embeddings;
pub mod extract;
pub mod fanout;
pub mod memory;
pub mod models;
pub mod observe;
pub mod workflows;

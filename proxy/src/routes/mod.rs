//! HTTP handlers, one module per area.

pub mod chat;
pub mod models;

//! End-to-end tests: the real proxy app in front of the fake upstreams. One
//! module per area.
//!
//! One test binary, not one per file: each binary links the whole stack
//! (bundled DuckDB included) with LTO, and eight of them took most of a
//! rebuild's time on the 2-core CI machine.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

mod console;
mod fanout;
mod hardening;
mod plugins;
mod providers;
mod shutdown;
mod store;
mod workflows;

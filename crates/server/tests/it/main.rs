//! The server's integration tests: one binary, one module per suite, black
//! box over HTTP (a gateway in this process on a random loopback port) or
//! over the real binary as child processes. Every suite runs on SQLite, and
//! also on PostgreSQL with `TEST_DATABASE_URL` and PostgreSQL + Redis with
//! `TEST_REDIS_URL` (see `common`). A suite that cannot run here says so on
//! the terminal (`skipped: …`), never silently. The seeded story test is its
//! own binary (`tests/story.rs`, it parses its own flags).

mod common;

mod access;
mod api;
mod browser;
mod compat;
mod crash;
mod data_hardening;
mod deploy;
mod latcom;
mod legacy_import;
mod lifecycle;
mod observability;
mod openapi;
mod process;
mod reconcile;
mod replicas;
mod rescue;
mod upstream_safety;
mod web;

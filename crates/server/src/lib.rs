//! The Recarga server: configuration, HTTP API, worker pool, scheduler and the
//! operator CLI, wired over the `domain`, `store` and `upstream` crates.
//!
//! Start at [`app`] (what a process runs), then [`http`] (the API),
//! [`topups`] (the accept path) and [`worker`] (claim → call → finalise).

pub mod app;
pub mod cli;
pub mod config;
pub mod http;
pub mod hub;
pub mod keys;
pub mod metrics;
pub mod redis_link;
pub mod topups;
pub mod web;
pub mod worker;

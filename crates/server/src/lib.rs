//! The adapters of Recarga: the HTTP API (`/v1` and the compatibility
//! routes), the pages, the command line, and the wiring that runs them over
//! the services (`recarga-service`).
//!
//! Start at [`serve`] (what a process runs) and [`state`] (what it holds),
//! then [`http`] (the API), [`web`] (the pages) and [`cli`] (the operator
//! commands). The money path itself is in `recarga-service` and
//! `recarga-store`; `ARCHITECTURE.md` at the repository root is the map.

pub mod cli;
pub mod config;
pub mod guards;
pub mod http;
pub mod legacy_env;
pub mod listen;
pub mod metrics;
pub mod probe;
pub mod ratelimit;
pub mod redis_link;
pub mod serve;
pub mod state;
pub mod throttle;
pub mod views;
pub mod web;

//! The application services of Recarga: what happens, whichever door a
//! request comes through (the HTTP API, the pages, the command line). No
//! HTTP, no HTML, no command-line parsing here; each adapter maps
//! [`ServiceError`] to its own answer.
//!
//! | module | what |
//! |---|---|
//! | [`accept`] | accept (or replay) a top-up and, when asked, wait for its outcome |
//! | [`settle`] | the worker pool: claim, call the upstream, record its answer |
//! | [`resolve`] | the scheduler: lease rescue, status queries of UNKNOWN, the audit |
//! | [`expire`] | outage expiry: never-sent top-ups older than the age limit fail `expired_not_sent` |
//! | [`customers`] | customers, credits and debits, operator resolutions: one set of rules |
//! | [`keys`] | API keys: issue, import, rotate, authenticate |
//! | [`import`] | `import legacy`: the old system's customers, keys and history, tied out to the centavo |
//! | [`export`] | `export legacy`: balances and new top-ups in the old schema, for a rollback |
//! | [`operators`] | operator accounts and passwords |
//! | [`reconcile`] | statements: import, match, classify; proposals applied by an operator |
//! | [`statements`] | a customer's statement: opening + movements = closing |
//! | [`dispute`] | a run's dispute pack (zip): totals that tie out, disputed lines with our evidence |
//! | [`hub`] | in-process signals: new work, a top-up changed, live-page events |
//! | [`context`] | [`Services`]: what they all run with |
//!
//! The decisions are pure functions in `recarga_domain` (`plan_accepts`,
//! `classify_attempt`, `classify_check`); the SQL is in `recarga_store`;
//! the upstream adapters in `recarga_upstream`.

pub mod accept;
pub mod context;
pub mod customers;
pub mod dispute;
pub mod error;
pub mod expire;
pub mod export;
pub mod hub;
pub mod import;
pub mod keys;
pub mod metrics;
pub mod operators;
pub mod reconcile;
pub mod resolve;
pub mod settle;
pub mod statements;

pub use context::{Services, Settings};
pub use error::{Result, ServiceError};
pub use hub::Hub;

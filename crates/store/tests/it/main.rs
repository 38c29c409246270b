//! The store's integration tests: one binary. `contract` runs every store
//! method against every engine the environment offers (SQLite always;
//! PostgreSQL when `TEST_DATABASE_URL` is set), each on a fresh database;
//! `processes` the processes that claim work and the rescue of a dead one's claims.

mod contract;
mod processes;

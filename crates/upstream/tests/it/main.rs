//! The upstream crate's integration tests: one binary. `adapter` drives the
//! Latcom adapter against the Latcom simulator over loopback HTTP.

mod adapter;

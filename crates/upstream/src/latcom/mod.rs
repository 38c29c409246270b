//! Latcom, the first upstream: its wire format ([`wire`]) and the adapter
//! that speaks it ([`client`]).

pub mod client;
pub mod wire;

pub use client::{Latcom, LatcomConfig};

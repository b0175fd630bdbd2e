//! agent-army: a stack file in, a private fleet of OpenClaw agent VMs out.
//!
//! The crate is split into a pure core (config, naming, tokens, rendering, planning) and thin
//! edges (providers, process and environment access) so the core can be unit-tested without a
//! cloud.

#[cfg(feature = "cloud")]
#[cfg(feature = "cloud")]
pub mod app;
#[cfg(feature = "cloud")]
mod backoff;
pub mod boot;
#[cfg(feature = "cloud")]
pub mod cli;
pub mod engine;
pub mod env;
#[cfg(feature = "cloud")]
pub mod error;
pub mod exit;
pub mod fsutil;
pub mod lock;
pub mod naming;
#[cfg(feature = "cloud")]
pub mod output;
pub mod plan;
pub mod progress;
pub mod provider;
pub mod render;
pub mod secrets;
#[cfg(feature = "cloud")]
pub mod ssh;
pub mod stack;
pub mod state;
pub mod tailnet;
#[cfg(feature = "cloud")]
pub mod tailscale_api;
pub mod token;

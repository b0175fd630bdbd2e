//! One integration-test crate: every test runs the real `agent-army` binary.

mod support;

mod aws;
mod bad_input;
mod cli;
mod hetzner;
mod hetzner_status;
mod ssh_status;
mod tailscale;
mod locking;

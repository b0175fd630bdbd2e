//! One integration-test crate: every test runs the real `agent-army` binary.

mod support;

mod aws;
mod bad_input;
mod cli;
mod conformance;
mod docker;
mod faults;
mod hetzner;
mod hetzner_status;
mod hygiene;
mod identity;
mod kills;
mod kubernetes;
mod locking;
mod malformed;
mod openclaw;
mod remote_state;
mod ssh_status;
mod tailscale;
mod update;
mod workflow;

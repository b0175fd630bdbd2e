//! One integration-test crate: every test runs the real `agent-army` binary.

mod support;

mod aws;
mod hetzner;

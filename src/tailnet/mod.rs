//! The tailnet as this machine sees it.
//!
//! - `tailscale status --json` and `tailscale netcheck --format=json`, parsed into types shaped
//!   like Tailscale's own (`ipnstate.Status`, `netcheck.Report`);
//! - each agent's device classified: online (direct or relayed), offline, missing, or its name
//!   taken by a stale device (the agent then joins as `<host>-1`);
//! - the per-stack known_hosts file agent-army uses when it connects with OpenSSH, and
//!   [`forget_host`], which drops an agent's entry when its server is replaced.
//!
//! Parsing and classification are pure functions; only [`local`], [`find_program`] and
//! [`forget_host`] touch the system.
//!
//! One file per seam: `status` (the status JSON), `classify` (presence and diagnosis),
//! `netcheck`, `local` (PATH lookup and the local client) and `known_hosts`; everything is
//! re-exported here.

mod classify;
mod known_hosts;
mod local;
mod netcheck;
mod status;

pub use classify::{ADMIN_CONSOLE, AgentTailnet, Context, Finding, Presence, classify, diagnose};
pub use known_hosts::{forget_host, known_hosts_path, without_host};
pub use local::{Local, find_program, local};
pub use netcheck::{NetcheckReport, NetcheckSummary, parse_netcheck, summarize};
pub use status::{Device, Link, PeerStatus, Status, TailnetStatus, parse_status};

//! `stacks`: every stack of the project, with its provider, place, agents and state.

use std::sync::Arc;

use serde::Serialize;

use super::Ctx;
use crate::app::session::backend;
use crate::error::Result;
use crate::exit::ExitStatus;
use crate::output::columns;
use crate::stack::{Project, load};
use crate::state::{LocalStore, StateBackend};

#[derive(Debug, Serialize)]
struct Row {
    stack: String,
    default: bool,
    provider: Option<String>,
    place: Option<String>,
    agents: Option<usize>,
    /// Agents recorded as deployed in state.
    deployed: usize,
    state: bool,
    /// Where the stack's state lives (a path, or `s3://…`).
    state_location: Option<String>,
    /// Why the state could not be read, when it could not (no credentials for a remote store).
    state_error: Option<String>,
    /// Why the stack does not load, when it does not.
    error: Option<String>,
}

pub fn run(ctx: &Ctx) -> Result<ExitStatus> {
    let root = crate::stack::load::find_root(&ctx.start_dir())?;
    let default = Project::locate(&root, None, &ctx.env).ok().map(|p| p.stack);
    let mut rows = Vec::new();
    for name in crate::stack::load::available_stacks(&root) {
        let project = Project {
            root: root.clone(),
            stack: name.clone(),
        };
        let mut row = Row {
            default: default.as_deref() == Some(name.as_str()),
            stack: name.clone(),
            provider: None,
            place: None,
            agents: None,
            deployed: 0,
            state: false,
            state_location: None,
            state_error: None,
            error: None,
        };
        // The stack's own backend (remote state included) when its files load; a stack that
        // does not load can only have local state.
        let store: Arc<dyn StateBackend> = match load(&project) {
            Ok(c) => {
                row.provider = Some(c.provider.kind().to_string());
                row.place = Some(c.provider.place().to_string());
                row.agents = Some(c.agents.len());
                match backend(&c, &ctx.env) {
                    Ok(b) => b,
                    Err(e) => {
                        row.state_error = Some(first_line(&e.to_string()));
                        rows.push(row);
                        continue;
                    }
                }
            }
            Err(e) => {
                row.error = Some(first_line(&e.to_string()));
                Arc::new(LocalStore::new(&root, &name, &ctx.env))
            }
        };
        row.state_location = Some(store.location());
        match store.read() {
            Ok(state) => {
                row.deployed = state.as_ref().map_or(0, |s| {
                    s.agents.values().filter(|a| a.server_id.is_some()).count()
                });
                row.state = state.is_some();
            }
            Err(e) => row.state_error = Some(first_line(&e.to_string())),
        }
        rows.push(row);
    }
    if ctx.json() {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"stacks": rows})).unwrap_or_default()
        );
        return Ok(ExitStatus::Success);
    }
    if rows.is_empty() {
        println!("No stacks yet: add one as stacks/<name>.toml (see `agent-army init`).");
        return Ok(ExitStatus::Success);
    }
    let dash = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                format!("{}{}", r.stack, if r.default { " (default)" } else { "" }),
                dash(&r.provider),
                dash(&r.place),
                r.agents.map_or("-".into(), |n| n.to_string()),
                match (&r.state_error, r.state) {
                    (Some(_), _) => "unreadable".into(),
                    (None, true) => format!("{} deployed", r.deployed),
                    (None, false) => "none".into(),
                },
                match (&r.error, &r.state_error) {
                    (Some(e), _) => format!("invalid: {e}"),
                    (None, Some(e)) => format!("state: {e}"),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    print!(
        "{}",
        columns(
            &["STACK", "PROVIDER", "PLACE", "AGENTS", "STATE", ""],
            &cells
        )
    );
    Ok(ExitStatus::Success)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

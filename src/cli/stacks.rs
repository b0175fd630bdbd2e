//! `stacks`: every stack of the project, with its provider, place, agents and state.

use serde::Serialize;

use super::Ctx;
use crate::error::Result;
use crate::exit::ExitStatus;
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
        let store = LocalStore::new(&root, &name, &ctx.env);
        let state = store.read().ok().flatten();
        let deployed = state.as_ref().map_or(0, |s| {
            s.agents.values().filter(|a| a.server_id.is_some()).count()
        });
        let mut row = Row {
            default: default.as_deref() == Some(name.as_str()),
            stack: name,
            provider: None,
            place: None,
            agents: None,
            deployed,
            state: state.is_some(),
            error: None,
        };
        match load(&project) {
            Ok(c) => {
                row.provider = Some(c.provider.kind().to_string());
                row.place = Some(c.provider.place().to_string());
                row.agents = Some(c.agents.len());
            }
            Err(e) => row.error = Some(e.to_string().lines().next().unwrap_or("").to_string()),
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
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                format!("{}{}", r.stack, if r.default { " (default)" } else { "" }),
                dash(&r.provider),
                dash(&r.place),
                r.agents.map_or("-".into(), |n| n.to_string()),
                if r.state {
                    format!("{} deployed", r.deployed)
                } else {
                    "none".into()
                },
                r.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("invalid: {e}")),
            ]
        })
        .collect();
    let heads = ["STACK", "PROVIDER", "PLACE", "AGENTS", "STATE", ""];
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .chain([heads[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(&heads.map(str::to_string)));
    for r in &table {
        println!("{}", line(r));
    }
    Ok(ExitStatus::Success)
}

//! Human and JSON output of plans and fleet outputs.

use serde::Serialize;

use crate::app::fleet::gateway_url;
use crate::plan::{AgentAction, NetworkAction, Plan};
use crate::stack::{Config, ProviderKind};

/// Words for the stack's network resource on each cloud.
pub fn network_noun(kind: ProviderKind) -> &'static str {
    crate::provider::profile(kind).network_noun
}

/// The plan as a diff, Terraform style.
pub fn plan_text(config: &Config, plan: &Plan) -> String {
    let kind = config.provider.kind();
    let mut out = format!(
        "Stack `{}` of project `{}` on {} {} ({} agents declared)\n",
        config.stack,
        config.project,
        kind,
        config.provider.place(),
        config.agents.len()
    );
    if !plan.refreshed {
        out.push_str("(cloud not queried: nothing recorded in state for this stack)\n");
    }
    out.push('\n');
    let inbound = if config.allowed_ssh_cidrs.is_empty() {
        "inbound: none".to_string()
    } else {
        format!(
            "inbound: tcp/22 from {}",
            config
                .allowed_ssh_cidrs
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let profile = crate::provider::profile(kind);
    let noun = profile.network_noun;
    for n in &plan.network {
        match n {
            NetworkAction::Create => {
                out.push_str(&format!("  + {noun} ({inbound})\n"));
                if profile.break_glass_key {
                    out.push_str(&format!(
                        "  + break-glass ssh key (keeps {} from mailing root passwords)\n",
                        profile.name
                    ));
                }
            }
            NetworkAction::UpdateRules { id } => {
                out.push_str(&format!("  ~ {noun} {id}: update rules ({inbound})\n"))
            }
            NetworkAction::NoChange { id } => {
                out.push_str(&format!("  = {noun} {id} ({inbound})\n"))
            }
            NetworkAction::Delete { id } => out.push_str(&format!("  - {noun} {id}\n")),
        }
    }
    let server = profile.server_noun;
    for a in &plan.agents {
        let agent = config.agent(a.agent());
        let detail = |out: &mut String| {
            if let Some(ag) = agent {
                let disk = if profile.disk_configurable {
                    format!(", {} GB disk", ag.disk_gb)
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "      {server}: {}, {}{disk}\n      hostname: {}\n      gateway:  {}\n",
                    ag.instance_type,
                    ag.image
                        .clone()
                        .unwrap_or_else(|| crate::app::fleet::default_image(config, ag)),
                    ag.fqdn,
                    gateway_url(&ag.fqdn, None)
                ));
            }
        };
        match a {
            AgentAction::Create { agent: name } => {
                out.push_str(&format!("  + {name}\n"));
                detail(&mut out);
            }
            AgentAction::Replace {
                agent: name,
                old_id,
                reasons,
            } => {
                out.push_str(&format!(
                    "-/+ {name} (replace {old_id}: {})\n",
                    reasons.join("; ")
                ));
                detail(&mut out);
            }
            AgentAction::Delete {
                agent: name,
                id,
                reason,
            } => {
                let name = if name.is_empty() { "(untagged)" } else { name };
                out.push_str(&format!("  - {name} (destroy {id}: {reason})\n"));
            }
            AgentAction::Update {
                agent: name,
                id,
                changes,
                unreachable,
            } => {
                out.push_str(&format!(
                    "  ~ {name} (update in place: {}; {id})\n",
                    changes.join(", ")
                ));
                if let Some(why) = unreachable {
                    out.push_str(&format!(
                        "      unreachable: {why}\n      (deploy fails for this agent; `--replace {name}` rebuilds it, losing its disk)\n"
                    ));
                }
            }
            AgentAction::Adopt { agent: name, id } => out.push_str(&format!(
                "  ~ {name} (no change; adopt {id}, found by its tags but missing from state)\n"
            )),
            AgentAction::NoChange { agent: name, id } => {
                out.push_str(&format!("  ~ {name} (no change, {id})\n"))
            }
        }
    }
    for f in &plan.forget {
        out.push_str(&format!("  . {f} (already gone; dropped from state)\n"));
    }
    let (c, r, d, n) = plan.counts();
    let u = plan.updates();
    let n = n - u;
    let net_changes = plan
        .network
        .iter()
        .filter(|n| !matches!(n, NetworkAction::NoChange { .. }))
        .count();
    out.push('\n');
    if plan.has_changes() {
        out.push_str(&format!(
            "Plan: {c} to create, {u} to update in place, {r} to replace, {d} to destroy, {n} unchanged; {net_changes} {noun} change(s).\n"
        ));
    } else {
        out.push_str(&format!(
            "No changes: the cloud matches the configuration ({n} agents unchanged).\n"
        ));
    }
    out
}

/// One line of the outputs table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub agent: String,
    pub hostname: String,
    pub server_id: Option<String>,
    pub state: String,
    pub gateway_url: String,
}

/// The outputs document (`--output json`).
#[derive(Debug, Serialize)]
pub struct Outputs<'a> {
    pub project: &'a str,
    pub stack: &'a str,
    pub provider: ProviderKind,
    pub agents: &'a [Row],
}

/// The outputs table: one row per agent.
pub fn table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.agent.clone(),
                r.hostname.clone(),
                r.server_id.clone().unwrap_or_else(|| "-".into()),
                r.state.clone(),
                r.gateway_url.clone(),
            ]
        })
        .collect();
    columns(&["AGENT", "HOSTNAME", "SERVER", "STATE", "GATEWAY"], &cells)
}

/// Left-aligned columns two spaces apart, widths in characters, no trailing blanks: every
/// table agent-army prints.
pub fn columns(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            s.push_str(&format!("{c:<w$}  "));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut headers.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

pub use crate::app::cloud::Cost;

/// One line for the end of a plan.
pub fn cost_text(cost: &Cost) -> String {
    match cost {
        Cost::Estimate {
            currency,
            location,
            monthly_net,
            monthly_gross,
            prices,
            servers,
        } => format!(
            "Estimated cost: {monthly_gross:.2} {currency}/month ({monthly_net:.2} net) for {servers} server(s) in {location} at Hetzner's list prices ({}); traffic and backups not included.",
            prices
                .iter()
                .map(|(t, p)| format!("{t} {:.2} net", p.net))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Cost::Unavailable { reason } => format!("Estimated cost: n/a ({reason})."),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Observed, ObservedNetwork, ObservedServer, ServerState};
    use crate::stack::{Project, load};
    use crate::state::{AgentState, NetworkState, State};

    const PROJECT: &str = r#"[project]
name = "demo"

[defaults]
model = "anthropic/claude-sonnet-5"

[defaults.env]
TZ = "UTC"

[[agents]]
name = "agent-pm"
role = "Product manager"
workspace = "ws"
"#;

    const STACK: &str = r#"provider = "aws"
region = "eu-central-1"
instance_type = "t3.medium"
tailnet = "tail12345.ts.net"

[secrets]
tailscale_auth_key = "env:TS_AUTHKEY"
gateway_seed = "env:GATEWAY_SEED"
ANTHROPIC_API_KEY = "env:ANTHROPIC_API_KEY"
"#;

    fn config(project: &str, stack: &str) -> (tempfile::TempDir, Config) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("stacks")).unwrap();
        std::fs::create_dir_all(d.path().join("ws")).unwrap();
        std::fs::write(d.path().join("ws/AGENTS.md"), "# AGENTS.md\n").unwrap();
        std::fs::write(d.path().join("agent-army.toml"), project).unwrap();
        std::fs::write(d.path().join("stacks/dev.toml"), stack).unwrap();
        let p = Project {
            root: d.path().to_path_buf(),
            stack: "dev".into(),
        };
        let c = load(&p).unwrap_or_else(|e| panic!("{e}"));
        (d, c)
    }

    /// The plan after one edit of a deployed one-agent stack: what each input does.
    #[test]
    fn plan_snapshots_update_in_place_versus_replace() {
        let (_d, base) = config(PROJECT, STACK);
        let deployed = crate::app::fleet::desired(&base, None).unwrap();
        let mut state = State::new("demo", "dev", base.provider.kind());
        state.network = Some(NetworkState {
            id: "sg-1".into(),
            ssh_key_id: None,
        });
        let mut observed = Observed {
            servers: vec![],
            networks: vec![ObservedNetwork {
                id: "sg-1".into(),
                ssh_cidrs: vec![],
                ssh_key_id: None,
            }],
        };
        for d in &deployed {
            state.agents.insert(
                d.name.clone(),
                AgentState {
                    server_id: Some("i-1".into()),
                    fingerprint: d.fingerprint.clone(),
                    inputs: d.inputs.clone(),
                    ..Default::default()
                },
            );
            observed.servers.push(ObservedServer {
                id: "i-1".into(),
                agent: d.name.clone(),
                fingerprint: Some(d.label.clone()),
                key_id: None,
                state: ServerState::Running,
                name: String::new(),
                created: String::new(),
            });
        }
        let project_edit = |from: &str, to: &str| {
            assert!(PROJECT.contains(from), "{from}");
            (PROJECT.replacen(from, to, 1), STACK.to_string())
        };
        let stack_edit = |from: &str, to: &str| {
            assert!(STACK.contains(from), "{from}");
            (PROJECT.to_string(), STACK.replacen(from, to, 1))
        };
        // What changed, the edited project and stack files, and a workspace file to write.
        type Case<'a> = (&'a str, (String, String), Option<(&'a str, &'a str)>);
        let cases: Vec<Case> = vec![
            ("nothing", project_edit("", ""), None),
            (
                "an env value",
                project_edit("TZ = \"UTC\"", "TZ = \"Europe/Berlin\""),
                None,
            ),
            (
                "a secret",
                stack_edit("env:ANTHROPIC_API_KEY", "env:ANTHROPIC_API_KEY_2"),
                None,
            ),
            (
                "the role",
                project_edit("Product manager", "Product owner"),
                None,
            ),
            (
                "a workspace file",
                project_edit("", ""),
                Some(("ws/AGENTS.md", "# edited\n")),
            ),
            (
                "a new workspace file",
                project_edit("", ""),
                Some(("ws/NOTES.md", "x\n")),
            ),
            (
                "the model",
                project_edit("claude-sonnet-5", "claude-opus-5"),
                None,
            ),
            (
                "the OpenClaw version",
                project_edit(
                    "[defaults]\n",
                    "[defaults]\nopenclaw_version = \"2026.9.7\"\n",
                ),
                None,
            ),
            (
                "OpenClaw settings",
                project_edit(
                    "workspace = \"ws\"\n",
                    "workspace = \"ws\"\n[agents.openclaw.agents.defaults]\nthinkingDefault = \"low\"\n",
                ),
                None,
            ),
            (
                "the instance type",
                stack_edit("t3.medium", "t3.large"),
                None,
            ),
            ("the region", stack_edit("eu-central-1", "eu-west-1"), None),
            (
                "the image",
                stack_edit(
                    "instance_type = \"t3.medium\"\n",
                    "instance_type = \"t3.medium\"\nimage = \"ami-0123456789abcdef0\"\n",
                ),
                None,
            ),
            (
                "the disk",
                project_edit("workspace = \"ws\"\n", "workspace = \"ws\"\ndisk_gb = 60\n"),
                None,
            ),
            (
                "the gateway token's generation",
                stack_edit(
                    "[secrets]\n",
                    "[token_generations]\nagent-pm = 1\n\n[secrets]\n",
                ),
                None,
            ),
            (
                "the Tailscale auth key (boot only)",
                stack_edit("env:TS_AUTHKEY", "env:TS_AUTHKEY_2"),
                None,
            ),
        ];
        let mut text = String::new();
        for (what, (project, stack), file) in cases {
            let (d, c) = config(&project, &stack);
            if let Some((path, content)) = file {
                std::fs::write(d.path().join(path), content).unwrap();
            }
            let c = if file.is_some() {
                load(&Project {
                    root: d.path().to_path_buf(),
                    stack: "dev".into(),
                })
                .unwrap()
            } else {
                c
            };
            let desired = crate::app::fleet::desired(&c, None).unwrap();
            let plan = crate::plan::plan(&crate::plan::PlanInput {
                desired: &desired,
                state: &state,
                observed: Some(&observed),
                ssh_cidrs: &[],
                force_replace: &Default::default(),
                destroy: false,
                also: &[],
            });
            let body = plan_text(&c, &plan);
            let lines: Vec<&str> = body
                .lines()
                .filter(|l| {
                    l.contains("agent-pm (")
                        || l.starts_with("Plan:")
                        || l.starts_with("No changes")
                })
                .collect();
            text.push_str(&format!("## {what}\n{}\n\n", lines.join("\n")));
        }
        insta::assert_snapshot!("plan_in_place_versus_replace", text);
    }
}

//! `secrets set|list|get|rm`: age-encrypted values inside the stack file.

use std::io::{IsTerminal, Read};

use clap::Subcommand;

use super::Ctx;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::naming;
use crate::secrets::{EncryptTo, Keyring, MASK, SecretRef};
use crate::stack::model::RESERVED_SECRETS;

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Encrypt a value from stdin (or a hidden prompt) into the stack file
    #[command(
        after_help = "Examples:\n  printf %s \"$TS_AUTHKEY\" | agent-army -s dev secrets set tailscale_auth_key\n  agent-army -s dev secrets set ANTHROPIC_API_KEY --agent agent-pm\n  agent-army -s dev secrets set gateway_seed --generate"
    )]
    Set {
        /// `tailscale_auth_key`, `hcloud_token`, `gateway_seed`, or an UPPER_CASE variable for
        /// the agents
        name: String,
        /// Only for this agent
        #[arg(long)]
        agent: Option<String>,
        /// Store a fresh random value instead of reading one (32 bytes in hex), e.g. for
        /// `gateway_seed`
        #[arg(long)]
        generate: bool,
    },
    /// List secret names (never values)
    List,
    /// Print a secret (masked unless --show)
    Get {
        name: String,
        #[arg(long)]
        agent: Option<String>,
        /// Print the plaintext value
        #[arg(long)]
        show: bool,
    },
    /// Remove a secret from the stack file
    Rm {
        name: String,
        #[arg(long)]
        agent: Option<String>,
    },
}

pub fn run(ctx: &Ctx, cmd: SecretsCmd) -> Result<ExitStatus> {
    match cmd {
        SecretsCmd::Set {
            name,
            agent,
            generate,
        } => set(ctx, &name, agent.as_deref(), generate),
        SecretsCmd::List => list(ctx),
        SecretsCmd::Get { name, agent, show } => get(ctx, &name, agent.as_deref(), show),
        SecretsCmd::Rm { name, agent } => rm(ctx, &name, agent.as_deref()),
    }
}

fn check_name(name: &str, agent: Option<&str>) -> Result<()> {
    let reserved = RESERVED_SECRETS.contains(&name);
    if reserved && agent.is_some() {
        return Err(Error::Usage(format!(
            "`{name}` is a stack-wide secret; drop --agent"
        )));
    }
    if !reserved && (!naming::is_env_name(name) || name.chars().any(|c| c.is_ascii_lowercase())) {
        return Err(Error::Usage(format!(
            "`{name}` is not a secret name: use one of {} or an UPPER_CASE environment variable name",
            RESERVED_SECRETS.join(", ")
        )));
    }
    Ok(())
}

/// The canonical name of `--agent` (`pm` → `agent-pm`), checked against the project.
fn check_agent(ctx: &Ctx, agent: Option<&str>) -> Result<Option<String>> {
    match agent {
        Some(a) => {
            let config = ctx.config()?;
            Ok(Some(super::find_agent(&config, a)?.name.clone()))
        }
        None => Ok(None),
    }
}

fn read_value(name: &str) -> Result<String> {
    let value = if std::io::stdin().is_terminal() {
        dialoguer::Password::new()
            .with_prompt(format!("Value for {name}"))
            .interact()
            .map_err(|e| Error::Input(format!("cannot read the value: {e}")))?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::Input(format!("cannot read the value from stdin: {e}")))?;
        // One trailing newline is the shell's, not the secret's.
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        s
    };
    if value.is_empty() {
        return Err(Error::Input(format!(
            "empty value for `{name}`: nothing stored"
        )));
    }
    if value.contains('\0') {
        return Err(Error::Input(format!(
            "the value for `{name}` contains a NUL byte, which the agent's environment file cannot carry (bash drops it): nothing stored"
        )));
    }
    Ok(value)
}

pub(super) fn stack_doc(ctx: &Ctx) -> Result<(std::path::PathBuf, toml_edit::DocumentMut)> {
    let project = ctx.project()?;
    let path = project.stack_file();
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let doc = text
        .parse::<toml_edit::DocumentMut>()
        .map_err(|e| Error::Input(format!("{}: {e}", project.stack_file_display().display())))?;
    Ok((path, doc))
}

fn table_mut<'a>(
    doc: &'a mut toml_edit::DocumentMut,
    agent: Option<&str>,
) -> Option<&'a mut toml_edit::Table> {
    match agent {
        None => {
            if doc.get("secrets").is_none() {
                doc.insert("secrets", toml_edit::Item::Table(toml_edit::Table::new()));
            }
            doc.get_mut("secrets")?.as_table_mut()
        }
        Some(a) => {
            if doc.get("agent_secrets").is_none() {
                let mut t = toml_edit::Table::new();
                t.set_implicit(true);
                doc.insert("agent_secrets", toml_edit::Item::Table(t));
            }
            let outer = doc.get_mut("agent_secrets")?.as_table_mut()?;
            if outer.get(a).is_none() {
                outer.insert(a, toml_edit::Item::Table(toml_edit::Table::new()));
            }
            outer.get_mut(a)?.as_table_mut()
        }
    }
}

fn set(ctx: &Ctx, name: &str, agent: Option<&str>, generate: bool) -> Result<ExitStatus> {
    check_name(name, agent)?;
    let agent = check_agent(ctx, agent)?;
    let agent = agent.as_deref();
    let (path, mut doc) = stack_doc(ctx)?;
    let recipients: Vec<String> = doc
        .get("age_recipients")
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let to = EncryptTo::for_stack(&recipients, &ctx.env).map_err(|e| Error::secret(name, e))?;
    let value = if generate {
        crate::token::generate_seed_hex()
    } else {
        read_value(name)?
    };
    if name == crate::stack::model::GATEWAY_SEED {
        crate::token::parse_seed(&value).map_err(|e| Error::Usage(format!("`{name}`: {e}")))?;
    }
    let armored = to
        .encrypt(value.as_bytes())
        .map_err(|e| Error::secret(name, e))?;
    drop(value);
    let table = table_mut(&mut doc, agent)
        .ok_or_else(|| Error::Input("`secrets` in the stack file is not a table".into()))?;
    // Replace the value in place so the key's comments and position are kept.
    match table.get_mut(name) {
        Some(item) => *item = toml_edit::value(armored),
        None => {
            table.insert(name, toml_edit::value(armored));
        }
    }
    crate::fsutil::write_atomic(&path, doc.to_string().as_bytes()).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let scope = agent.map(|a| format!(" for agent {a}")).unwrap_or_default();
    if !ctx.global.quiet {
        eprintln!("stored `{name}`{scope} encrypted in {}", path.display());
    }
    Ok(ExitStatus::Success)
}

fn list(ctx: &Ctx) -> Result<ExitStatus> {
    let config = ctx.config()?;
    let describe = |r: &SecretRef| match r {
        SecretRef::Env(v) => format!("env:{v}"),
        SecretRef::Encrypted(_) => "encrypted".to_string(),
    };
    let mut rows: Vec<(String, String, String)> = config
        .secrets
        .iter()
        .map(|(k, v)| (k.clone(), "stack".to_string(), describe(v)))
        .collect();
    for a in &config.agents {
        for (k, v) in &a.secrets {
            if config.secrets.get(k) != Some(v) {
                rows.push((k.clone(), a.name.clone(), describe(v)));
            }
        }
    }
    if ctx.json() {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, s, k)| serde_json::json!({"name": n, "scope": s, "storage": k}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{:<32} {:<16} STORAGE", "NAME", "SCOPE");
        for (n, s, k) in rows {
            println!("{n:<32} {s:<16} {k}");
        }
    }
    Ok(ExitStatus::Success)
}

fn get(ctx: &Ctx, name: &str, agent: Option<&str>, show: bool) -> Result<ExitStatus> {
    let config = ctx.config()?;
    let r = match agent {
        Some(a) => config
            .agent(a)
            .ok_or_else(|| Error::Usage(format!("no agent `{a}`")))?
            .secrets
            .get(name),
        None => config.secrets.get(name),
    }
    .ok_or_else(|| {
        Error::Usage(format!(
            "no secret `{name}` in {}",
            config.stack_file.display()
        ))
    })?;
    let scope = agent.unwrap_or("stack");
    if !show {
        if ctx.json() {
            println!(
                "{}",
                serde_json::json!({"name": name, "scope": scope, "value": null, "masked": true})
            );
        } else {
            println!("{MASK}");
            eprintln!("(masked; pass --show to print the value)");
        }
        return Ok(ExitStatus::Success);
    }
    let v = Keyring::load(&ctx.env)
        .resolve(r, &ctx.env)
        .map_err(|e| Error::secret(name, e))?;
    if ctx.json() {
        println!(
            "{}",
            serde_json::json!({"name": name, "scope": scope, "value": v.expose(), "masked": false})
        );
    } else {
        println!("{}", v.expose());
    }
    Ok(ExitStatus::Success)
}

fn rm(ctx: &Ctx, name: &str, agent: Option<&str>) -> Result<ExitStatus> {
    let (path, mut doc) = stack_doc(ctx)?;
    let removed = table_mut(&mut doc, agent)
        .and_then(|t| t.remove(name))
        .is_some();
    if !removed {
        return Err(Error::Usage(format!("no secret `{name}` to remove")));
    }
    crate::fsutil::write_atomic(&path, doc.to_string().as_bytes()).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    if !ctx.global.quiet {
        eprintln!("removed `{name}` from {}", path.display());
    }
    Ok(ExitStatus::Success)
}

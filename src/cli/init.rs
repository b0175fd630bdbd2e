//! `init`: scaffold a project, create an age identity if needed, add .gitignore entries.

use std::path::PathBuf;

use clap::Args;

use super::Ctx;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use crate::naming;
use crate::stack::{PROJECT_FILE, ProviderKind, STACKS_DIR};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to create the project in (default: current directory)
    pub dir: Option<PathBuf>,
    /// Project name (default: the folder's name)
    #[arg(long)]
    pub name: Option<String>,
    /// Cloud of the first stack
    #[arg(long, value_parser = ["aws", "hetzner"], default_value = "hetzner")]
    pub provider: String,
    /// Tailnet DNS name (MagicDNS suffix)
    #[arg(long, default_value = "tail00000.ts.net")]
    pub tailnet: String,
}

const GITIGNORE_LINES: &[&str] = &[".agent-army/", "rendered/"];

pub fn run(ctx: &Ctx, args: InitArgs) -> Result<ExitStatus> {
    let dir = ctx
        .cwd
        .join(args.dir.as_deref().unwrap_or(std::path::Path::new(".")));
    let stack = ctx.global.stack.clone().unwrap_or_else(|| "dev".into());
    let provider = if args.provider == "aws" {
        ProviderKind::Aws
    } else {
        ProviderKind::Hetzner
    };
    let name = match &args.name {
        Some(n) => n.clone(),
        None => dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|f| f.to_string_lossy().to_lowercase()))
            .map(|n| {
                n.chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect::<String>()
                    .trim_matches('-')
                    .to_string()
            })
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "agents".into()),
    };
    // Check everything before writing anything.
    if let Err(e) = naming::check_dns_label(&name) {
        return Err(Error::Usage(format!(
            "project name `{name}` {e}; pass --name"
        )));
    }
    if let Err(e) = naming::check_dns_label(&stack) {
        return Err(Error::Usage(format!("stack name `{stack}` {e}")));
    }
    let project_file = dir.join(PROJECT_FILE);
    if project_file.exists() {
        return join(ctx);
    }
    let stack_file = dir.join(STACKS_DIR).join(format!("{stack}.toml"));
    for f in [&stack_file] {
        if f.exists() {
            return Err(Error::Input(format!(
                "{} already exists: this folder already holds an agent-army project",
                f.display()
            )));
        }
    }
    let (identity, public, created) = ensure_identity(ctx)?;

    let write = |path: &PathBuf, text: &str| {
        crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })
    };
    write(&project_file, &project_template(&name, &stack))?;
    write(
        &stack_file,
        &stack_template(provider, &args.tailnet, &public),
    )?;
    let gitignore = dir.join(".gitignore");
    let existing = std::fs::read_to_string(&gitignore).unwrap_or_default();
    let mut text = existing.clone();
    for line in GITIGNORE_LINES {
        if !existing.lines().any(|l| l.trim() == *line) {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
        }
    }
    if text != existing {
        write(&gitignore, &text)?;
    }
    if ctx.json() {
        println!(
            "{}",
            serde_json::json!({
                "project_file": PROJECT_FILE,
                "stack_file": format!("{STACKS_DIR}/{stack}.toml"),
                "identity": identity.display().to_string(),
                "identity_created": created,
                "recipient": public,
            })
        );
        return Ok(ExitStatus::Success);
    }
    if created {
        eprintln!("created age identity {} (mode 0600)", identity.display());
    } else {
        eprintln!("using existing age identity {}", identity.display());
    }
    println!(
        "created {PROJECT_FILE} and {STACKS_DIR}/{stack}.toml; your public key {public} is a recipient"
    );
    println!(
        "next: export TS_AUTHKEY=tskey-auth-...   (or: agent-army -s {stack} secrets set tailscale_auth_key)"
    );
    println!("      agent-army -s {stack} plan");
    Ok(ExitStatus::Success)
}

/// The user's age identity (created when missing): its path, public key, and whether it
/// was created now.
fn ensure_identity(ctx: &Ctx) -> Result<(PathBuf, String, bool)> {
    let identity = ctx.env.identity_path().ok_or_else(|| {
        Error::Input(
            "HOME is not set; set AGENT_ARMY_IDENTITY to where the identity should go".into(),
        )
    })?;
    let (public, created) =
        crate::secrets::ensure_identity(&identity).map_err(|e| Error::secret("identity", e))?;
    Ok((identity, public, created))
}

/// `init` in an existing project (a teammate's first day, a new CI identity): create the
/// identity if there is none and, for the stack named with `--stack`, add its recipient to
/// `age_recipients`. Nothing else changes.
fn join(ctx: &Ctx) -> Result<ExitStatus> {
    let (identity, public, created) = ensure_identity(ctx)?;
    let mut added = None;
    if let Some(stack) = &ctx.global.stack {
        let (path, mut doc) = super::secrets::stack_doc(ctx)?;
        let list = doc
            .entry("age_recipients")
            .or_insert(toml_edit::value(toml_edit::Array::new()))
            .as_array_mut()
            .ok_or_else(|| {
                Error::Input(format!(
                    "{STACKS_DIR}/{stack}.toml: `age_recipients` is not a list"
                ))
            })?;
        let present = list.iter().any(|v| v.as_str() == Some(public.as_str()));
        if !present {
            list.push(public.as_str());
            crate::fsutil::write_atomic(&path, doc.to_string().as_bytes()).map_err(|source| {
                Error::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        added = Some((stack.clone(), !present));
    }
    if ctx.json() {
        println!(
            "{}",
            serde_json::json!({
                "identity": identity.display().to_string(),
                "identity_created": created,
                "recipient": public,
                "added_to": added.as_ref().filter(|(_, new)| *new).map(|(s, _)| format!("{STACKS_DIR}/{s}.toml")),
            })
        );
        return Ok(ExitStatus::Success);
    }
    if created {
        eprintln!("created age identity {} (mode 0600)", identity.display());
    } else {
        eprintln!("using existing age identity {}", identity.display());
    }
    println!("this folder already holds an agent-army project; your public key is {public}");
    match added {
        Some((stack, true)) => {
            println!("added it to `age_recipients` in {STACKS_DIR}/{stack}.toml");
            println!(
                "secrets already in that file stay readable only by the earlier recipients: someone who holds one sets them again (`agent-army -s {stack} secrets set NAME`) to include you"
            );
        }
        Some((stack, false)) => {
            println!("it is already a recipient of {STACKS_DIR}/{stack}.toml");
        }
        None => println!("to be a recipient of a stack's secrets: agent-army -s STACK init"),
    }
    Ok(ExitStatus::Success)
}

fn project_template(name: &str, stack: &str) -> String {
    format!(
        r#"[project]
name = "{name}"
default_stack = "{stack}"

[defaults]
disk_gb = 30
openclaw_version = "latest"

[[agents]]
name = "agent-pm"
role = "Product manager: turns requests into specs and tickets"

[[agents]]
name = "agent-eng"
role = "Engineer: implements tickets and opens pull requests"

[[agents]]
name = "agent-tester"
role = "Tester: reviews pull requests and runs the test suites"
"#
    )
}

fn stack_template(provider: ProviderKind, tailnet: &str, public: &str) -> String {
    let place = crate::provider::profile(provider).scaffold;
    format!(
        r#"provider = "{provider}"
{place}
tailnet = "{tailnet}"
# Port 22 stays closed; agents are reached over Tailscale SSH.
allowed_ssh_cidrs = []
age_recipients = ["{public}"]

[secrets]
# Replace with an encrypted value: agent-army secrets set tailscale_auth_key
tailscale_auth_key = "env:TS_AUTHKEY"
"#
    )
}

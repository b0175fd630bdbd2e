//! `open` and `logs`: an agent's Control UI URL, and its gateway's journal.

use super::Ctx;
use super::ssh::{exec_on, quote};
use crate::app::fleet;
use crate::env::vars;
use crate::error::{Error, Result};
use crate::exit::ExitStatus;
use clap::Args;

#[derive(Debug, Args)]
pub struct OpenArgs {
    /// Agent (`agent-pm`, or `pm` without the `agent-` prefix)
    pub agent: String,
    /// Print the URL with the real token (masked otherwise)
    #[arg(long)]
    pub show_secrets: bool,
    /// Open the URL (with its token) in the browser: $BROWSER, else xdg-open / open
    #[arg(long)]
    pub browser: bool,
}

pub fn open(ctx: &Ctx, args: OpenArgs) -> Result<ExitStatus> {
    let session = ctx.session()?;
    let config = &session.config;
    let agent = super::find_agent(config, &args.agent)?;
    let state = session.read_state()?;
    // A pod has no server in state; its gateway keys are in state all the same.
    if crate::render::kubernetes::settings(config).is_none() {
        super::ssh::require_deployed(config, &state, agent)?;
    }
    let token = if args.show_secrets || args.browser {
        let keys = fleet::load_keys(
            &state,
            config,
            &session.keyring,
            &ctx.env,
            [agent.name.clone()],
        )?;
        Some(
            keys.get(&agent.name)
                .ok_or_else(|| {
                    Error::Input(format!(
                        "state holds no gateway key for `{}`; run `agent-army deploy`",
                        agent.name
                    ))
                })?
                .token(),
        )
    } else {
        None
    };
    let shown = fleet::gateway_url(
        &agent.fqdn,
        if args.show_secrets {
            token.as_deref()
        } else {
            None
        },
    );
    let full = args
        .browser
        .then(|| fleet::gateway_url(&agent.fqdn, token.as_deref()));
    present(ctx, &args, &agent.name, &shown, full.as_deref())
}

/// Print `shown` (the URL, token masked unless `--show-secrets`) and with `--browser` open
/// `full` (the URL with its token).
pub fn present(
    ctx: &Ctx,
    args: &OpenArgs,
    agent: &str,
    shown: &str,
    full: Option<&str>,
) -> Result<ExitStatus> {
    if let Some(full) = full {
        let opener = ctx
            .env
            .get(vars::BROWSER)
            .map(str::to_string)
            .unwrap_or_else(|| {
                if cfg!(target_os = "macos") {
                    "open".into()
                } else {
                    "xdg-open".into()
                }
            });
        let status = std::process::Command::new(&opener)
            .arg(full)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| Error::Input(format!("cannot run `{opener}` to open the browser: {e}; set BROWSER, or copy the URL from `agent-army open {} --show-secrets`", args.agent)))?;
        if !status.success() {
            return Err(Error::Input(format!(
                "`{opener}` exited with {}",
                status.code().map_or("a signal".into(), |c| c.to_string())
            )));
        }
    }
    if ctx.json() {
        println!(
            "{}",
            serde_json::json!({"agent": agent, "url": shown, "opened": args.browser})
        );
    } else {
        println!("{shown}");
        if args.browser {
            eprintln!(
                "opened in the browser; a new browser must be paired once: `agent-army pair {} --yes`",
                args.agent
            );
        }
    }
    Ok(ExitStatus::Success)
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Agent (`agent-pm`, or `pm` without the `agent-` prefix)
    pub agent: String,
    /// Keep printing new lines as they come
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many of the latest lines to show first
    #[arg(long, short = 'n', default_value_t = 100)]
    pub lines: u32,
    /// Only lines since this time (journalctl syntax, e.g. `1h ago`, `today`; on Kubernetes
    /// and Docker stacks a duration such as `1h`)
    #[arg(long)]
    pub since: Option<String>,
    /// Tailscale's log instead of the gateway's: the sidecar's on Kubernetes and Docker
    /// stacks, tailscaled's unit on a VM
    #[arg(long)]
    pub tailscale: bool,
    /// Remote user for ssh
    #[arg(long, short = 'u', default_value = "ubuntu")]
    pub user: String,
    /// Print the ssh command instead of running it
    #[arg(long)]
    pub print: bool,
}

/// The remote `journalctl` command line; `json` asks journalctl for one JSON object a line.
pub fn journal_command(args: &LogsArgs, json: bool) -> String {
    let mut words = vec![
        "journalctl".to_string(),
        if args.tailscale {
            "--unit=tailscaled".into()
        } else {
            "--unit=openclaw-gateway".into()
        },
        "--no-pager".into(),
        if json {
            "--output=json".into()
        } else {
            "--output=short-iso".into()
        },
        format!("--lines={}", args.lines),
    ];
    if let Some(s) = &args.since {
        words.push(format!("--since={s}"));
    }
    if args.follow {
        words.push("--follow".into());
    }
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// `--since` as a container's log takes it: a duration (`1h`, `90m`; journalctl's `1h ago`
/// reads the same), in seconds.
pub fn since_seconds(since: Option<&str>) -> Result<Option<u64>> {
    let Some(s) = since else { return Ok(None) };
    let d = s.trim().trim_end_matches("ago").trim();
    humantime::parse_duration(d)
        .map(|d| Some(d.as_secs().max(1)))
        .map_err(|_| {
            crate::error::Error::Usage(format!(
                "--since `{s}`: on a Kubernetes or Docker stack it is a duration, such as `1h` or `30m`"
            ))
        })
}

/// A container's log, timestamped (`<RFC 3339> <message>` a line), written as it comes:
/// as it is, or (`--output json`) one `{"time", "message"}` object a line.
pub struct TimedLines<W: std::io::Write> {
    out: W,
    json: bool,
    pending: Vec<u8>,
}

impl<W: std::io::Write> TimedLines<W> {
    pub fn new(out: W, json: bool) -> Self {
        TimedLines {
            out,
            json,
            pending: Vec::new(),
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches(['\n', '\r']);
        let (time, message) = line.split_once(' ').unwrap_or(("", line));
        let _ = writeln!(
            self.out,
            "{}",
            serde_json::json!({ "time": time, "message": message })
        );
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if !self.json {
            let _ = self.out.write_all(chunk);
            let _ = self.out.flush();
            return;
        }
        self.pending.extend_from_slice(chunk);
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            self.line(&line);
        }
        let _ = self.out.flush();
    }

    /// A last line without its newline.
    pub fn finish(mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.line(&line);
        }
        let _ = self.out.flush();
    }
}

pub async fn logs(ctx: &Ctx, args: LogsArgs) -> Result<ExitStatus> {
    let remote = journal_command(&args, ctx.json());
    exec_on(ctx, &args.agent, Some(&args.user), Some(remote), args.print).await
}

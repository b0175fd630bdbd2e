//! `completions <shell>` and `man`: shell completion scripts and man pages, generated from the
//! same clap definition the binary parses with (clap_complete, clap_mangen).

use std::path::PathBuf;

use clap::{Args, CommandFactory};

use super::{Cli, Ctx};
use crate::error::{Error, Result};
use crate::exit::ExitStatus;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to write the completion script for
    pub shell: clap_complete::Shell,
}

/// Print a completion script. Install, e.g.:
/// bash: `agent-army completions bash > ~/.local/share/bash-completion/completions/agent-army`
pub fn completions(args: CompletionsArgs) -> Result<ExitStatus> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "agent-army", &mut std::io::stdout());
    Ok(ExitStatus::Success)
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `agent-army.1` and one `agent-army-<command>.1` per command into this folder
    /// (otherwise the main page goes to stdout)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn man(ctx: &Ctx, args: ManArgs) -> Result<ExitStatus> {
    let cmd = Cli::command();
    let Some(dir) = &args.out else {
        clap_mangen::Man::new(cmd)
            .render(&mut std::io::stdout())
            .map_err(|source| Error::Io {
                path: "stdout".into(),
                source,
            })?;
        return Ok(ExitStatus::Success);
    };
    let dir = ctx.cwd.join(dir);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        path: dir.clone(),
        source,
    })?;
    let mut pages = vec![("agent-army".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands() {
        let name = format!("agent-army-{}", sub.get_name());
        pages.push((name.clone(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut buf)
            .and_then(|()| std::fs::write(&path, &buf))
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        if !ctx.json() && !ctx.global.quiet {
            println!("wrote {}", path.display());
        }
    }
    Ok(ExitStatus::Success)
}

use std::process::ExitCode;

use clap::Parser;

use agent_army::cli::{self, Cli};
use agent_army::env::{Env, vars};
use agent_army::exit::ExitStatus;

fn main() -> ExitCode {
    let env = Env::from_process();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    ExitCode::SUCCESS
                }
                _ => code(ExitStatus::Usage),
            };
        }
    };
    init_tracing(&env, cli.global.verbose);
    std::panic::set_hook(Box::new(|info| {
        // `agent-army outputs | head`: the reader went away. Not a bug; end quietly.
        if info.to_string().contains("Broken pipe") {
            BROKEN_PIPE.store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        eprintln!(
            "internal error: {info}\nThis is a bug in agent-army; please report it with the command you ran."
        );
    }));
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot read the current directory: {e}");
            return code(ExitStatus::Failure);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return code(ExitStatus::Internal);
        }
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(cli::run(cli, env, cwd))
    }));
    match result {
        Ok(Ok(status)) => code(status),
        Ok(Err(e)) => {
            eprintln!("{}", e.render());
            code(e.exit_status())
        }
        Err(_) if BROKEN_PIPE.load(std::sync::atomic::Ordering::SeqCst) => ExitCode::from(141),
        Err(_) => code(ExitStatus::Internal),
    }
}

/// Set when stdout was closed by its reader (exit 141, as for SIGPIPE in a shell).
static BROKEN_PIPE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn code(s: ExitStatus) -> ExitCode {
    ExitCode::from(s.code() as u8)
}

/// Logs go to stderr. Verbosity only raises agent-army's own targets, so SDK wire logs (which
/// would carry request bodies such as user data) stay off unless asked for by filter.
fn init_tracing(env: &Env, verbose: u8) {
    let filter = match env.get(vars::LOG) {
        Some(f) => f.to_string(),
        None => match verbose {
            0 => "warn".into(),
            1 => "warn,agent_army=info".into(),
            2 => "warn,agent_army=debug".into(),
            _ => "info,agent_army=trace".into(),
        },
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(env.get(vars::NO_COLOR).is_none())
        .try_init();
}

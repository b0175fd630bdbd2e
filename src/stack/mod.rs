//! Project and stack configuration: file model, loading and validation.

pub mod diag;
pub mod discover;
pub mod load;
pub mod model;
pub mod openclaw;
pub mod validate;

pub use diag::Diagnostic;
pub use load::{Project, load, load_from_strs};
pub use model::{Agent, Config, ProviderKind, ProviderSettings};

use std::path::PathBuf;

/// Name of the project file.
pub const PROJECT_FILE: &str = "agent-army.toml";
/// Folder of stack files.
pub const STACKS_DIR: &str = "stacks";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("no {PROJECT_FILE} in {} or any parent directory", .0.display())]
    NoProject(PathBuf),
    #[error("no stack selected")]
    NoStack { available: Vec<String> },
    #[error("stack `{name}` does not exist: {} not found", .path.display())]
    UnknownStack {
        name: String,
        path: PathBuf,
        available: Vec<String>,
    },
    #[error(
        "`{name}` is not a stack name: it {reason} (a stack is the file `stacks/<name>.toml`, named as a lowercase DNS label such as `dev`)"
    )]
    BadStackName {
        name: String,
        reason: String,
        available: Vec<String>,
    },
    #[error("{} {what}, not a stack file", .path.display())]
    NotAFile { path: PathBuf, what: String },
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_diags(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render_diags(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| d.render())
        .collect::<Vec<_>>()
        .join("\nerror: ")
}

impl StackError {
    pub fn help(&self) -> Option<String> {
        let list = |a: &[String]| {
            if a.is_empty() {
                "none yet".to_string()
            } else {
                a.join(", ")
            }
        };
        match self {
            StackError::NoProject(_) => {
                Some("run `agent-army init` to create a project, or pass --project-dir".into())
            }
            StackError::NoStack { available } => Some(format!(
                "pass --stack NAME, set AGENT_ARMY_STACK, or set `default_stack` in {PROJECT_FILE}; available stacks: {}",
                list(available)
            )),
            StackError::UnknownStack { available, .. }
            | StackError::BadStackName { available, .. } => {
                Some(format!("available stacks: {}", list(available)))
            }
            _ => None,
        }
    }
}

//! The entry point of `stack/`: [`load`] has discovery (`discover.rs`) read the files and
//! validation (`validate.rs`) check them. The public paths (`stack::load::find_root`, ...)
//! stay here for the rest of the crate and the fuzz target.

use std::path::{Path, PathBuf};

use super::diag::Source;
use super::discover;
pub use super::discover::{Project, available_stacks, find_root};
use super::model::Config;
use super::validate;
pub use super::validate::{DEFAULT_DISK_GB, DEFAULT_HOP_LIMIT};
use super::{PROJECT_FILE, StackError};

/// Load and validate the project and its selected stack. Nothing is decrypted here.
pub fn load(project: &Project) -> Result<Config, StackError> {
    let files = discover::read_files(project)?;
    load_from_strs(&project.root, &project.stack, &files.project, &files.stack)
}

/// Parse and validate a project file and a stack file given as text: the core of [`load`],
/// used by it and by the fuzz target. `root` is where `workspace` folders are looked up (the
/// only thing read from disk, by discovery, between parsing and validation); `stack` is the
/// stack's name, as given by its file name. Nothing is decrypted here.
pub fn load_from_strs(
    root: &Path,
    stack: &str,
    project_text: &str,
    stack_text: &str,
) -> Result<Config, StackError> {
    let project = Project {
        root: root.to_path_buf(),
        stack: stack.to_string(),
    };
    let pshow = PathBuf::from(PROJECT_FILE);
    let sshow = project.stack_file_display();
    let psrc = Source::new(&pshow, project_text);
    let ssrc = Source::new(&sshow, stack_text);
    let parsed = validate::parse(&psrc, &ssrc)?;
    let workspaces = discover::read_workspaces(root, parsed.workspaces());
    validate::validate(&project, &psrc, &ssrc, &parsed, &workspaces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::discover::tests::write_project;

    const PROJECT: &str =
        "[project]\nname = \"demo\"\n\n[[agents]]\nname = \"agent-pm\"\nrole = \"PM\"\n";
    const STACK: &str = "provider = \"hetzner\"\nlocation = \"fsn1\"\nserver_type = \"cx22\"\ntailnet = \"tail1.ts.net\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n";

    #[test]
    fn text_loader_matches_disk_loader() {
        let d = tempfile::tempdir().unwrap();
        let p = write_project(d.path(), PROJECT, STACK);
        let from_disk = load(&p).unwrap();
        let from_text = load_from_strs(d.path(), "dev", PROJECT, STACK).unwrap();
        assert_eq!(format!("{from_disk:?}"), format!("{from_text:?}"));
        let bad = STACK.replace("location", "locaton");
        let e = load_from_strs(d.path(), "dev", PROJECT, &bad).unwrap_err();
        assert!(
            e.to_string().starts_with("stacks/dev.toml:2:1: `locaton`"),
            "{e}"
        );
    }
}

#[cfg(test)]
mod workspace_tests {
    use super::*;

    const STACK: &str = "provider = \"hetzner\"\nlocation = \"fsn1\"\nserver_type = \"cx22\"\ntailnet = \"tail1.ts.net\"\n\n[secrets]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n";

    fn project(agents: &[(&str, &str)]) -> String {
        let mut p = "[project]\nname = \"demo\"\n".to_string();
        for (name, extra) in agents {
            p.push_str(&format!(
                "\n[[agents]]\nname = \"{name}\"\nrole = \"PM\"\n{extra}"
            ));
        }
        p
    }

    fn errs(root: &Path, project: &str) -> Vec<String> {
        match load_from_strs(root, "dev", project, STACK) {
            Err(StackError::Invalid(ds)) => ds.iter().map(|d| d.to_string()).collect(),
            Err(e) => vec![format!("other: {e}")],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn workspace_files_are_read_recursively() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("agents/pm/sub")).unwrap();
        std::fs::write(d.path().join("agents/pm/IDENTITY.md"), "pm").unwrap();
        std::fs::write(d.path().join("agents/pm/sub/x.txt"), b"\xff").unwrap();
        let p = project(&[("agent-pm", "workspace = \"agents/pm\"\n")]);
        let c = load_from_strs(d.path(), "dev", &p, STACK).unwrap();
        let files: Vec<(&str, &[u8])> = c.agents[0]
            .workspace_files
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        assert_eq!(
            files,
            vec![("IDENTITY.md", &b"pm"[..]), ("sub/x.txt", &b"\xff"[..])]
        );
    }

    #[test]
    fn workspace_problems_are_diagnostics_in_order() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("agents/ok")).unwrap();
        std::fs::write(d.path().join("agents/ok/bad\u{1}name"), "x").unwrap();
        let p = project(&[
            ("agent-a", "workspace = \"../outside\"\n"),
            ("agent-b", "workspace = \"/etc\"\n"),
            (
                "agent-c",
                "workspace = \"agents/missing\"\nmodel = \"nope\"\n",
            ),
            ("agent-d", "workspace = \"agents/ok\"\n"),
            // Agents rejected before their workspace is looked at report nothing about it.
            ("agent-a", "workspace = \"agents/missing\"\n"),
            ("Bad", "workspace = \"agents/missing\"\n"),
        ]);
        let e = errs(d.path(), &p);
        assert_eq!(
            e,
            vec![
                "agent-army.toml:7:13: `agents.workspace`: `../outside` must be a folder inside the project",
                "agent-army.toml:12:13: `agents.workspace`: `/etc` must be a folder inside the project",
                "agent-army.toml:17:13: `agents.workspace`: folder `agents/missing` does not exist\n  help: create it, or remove `workspace`",
                "agent-army.toml:18:9: `agents.model`: `nope` is not a `provider/model` reference\n  help: write e.g. `anthropic/claude-sonnet-5`, or `<name>/<model id>` for a provider under `[models.providers]`",
                "agent-army.toml:23:13: `agents.workspace`: file name \"bad\\u{1}name\" contains control characters",
                "agent-army.toml:26:8: `agents.name`: duplicate agent name `agent-a` (first defined on line 5)\n  help: agent names must be unique",
                "agent-army.toml:31:8: `agents.name`: agent name `Bad` contains 'B'; only lowercase letters a-z, digits 0-9 and '-' are allowed\n  help: use lowercase letters, digits and '-', e.g. `agent-pm`",
            ]
        );
    }
}

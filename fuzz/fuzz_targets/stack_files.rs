//! Fuzz target: arbitrary text as `agent-army.toml` and `stacks/dev.toml`.
//!
//! Input: the project file's text, one NUL byte, the stack file's text (no NUL: everything is
//! the project file and the stack file is empty). Invalid UTF-8 becomes U+FFFD, so every
//! input reaches the loader.
//!
//! Oracles, beyond "never panics":
//! - an error is a non-empty list of diagnostics, each naming one of the two files at a line
//!   and column inside that file, and it displays without panicking;
//! - every agent of a configuration that loads renders (masked) to a `#cloud-config` YAML
//!   document that parses, with the agent's hostname, one cloud-init script per boot step, its role in
//!   `IDENTITY.md` (the role) byte for byte, and its environment file giving back every value through
//!   POSIX shell quoting;
//! - the provider's user data is within its limit or refused with `TooLarge`.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use agent_army::boot;
use agent_army::render::{self, RenderError, Values};
use agent_army::stack::{Config, StackError, load_from_strs};
use libfuzzer_sys::fuzz_target;

const PROJECT_FILE: &str = "agent-army.toml";
const STACK_FILE: &str = "stacks/dev.toml";

/// The project root workspaces are looked up in: two small folders, as in the example
/// project (`agents/pm`, `agents/eng`), under the fuzz crate's own target dir.
static ROOT: LazyLock<PathBuf> = LazyLock::new(|| {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-root");
    for (dir, text) in [
        ("agents/pm", "# PM\nWrite specs.\n"),
        (
            "agents/eng",
            "# Engineer\nWrite code. é \u{2028} 'q' \"d\"\n",
        ),
    ] {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).expect("create fuzz root");
        std::fs::write(d.join("AGENTS.md"), text).expect("write fuzz root");
    }
    root
});

/// With `STACK_FILES_TRACE` set, each input's outcome goes to stderr (to see how much of a
/// corpus loads: `-runs=0` executes the corpus once).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("STACK_FILES_TRACE").is_some());

fuzz_target!(|data: &[u8]| {
    let (project, stack) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let project = String::from_utf8_lossy(project);
    let stack = String::from_utf8_lossy(stack);
    let result = load_from_strs(&ROOT, "dev", &project, &stack);
    if *TRACE {
        match &result {
            Ok(c) => eprintln!("TRACE loaded: {} agents", c.agents.len()),
            Err(StackError::Invalid(d)) => {
                for d in d {
                    eprintln!("TRACE diagnostic: {d}");
                }
            }
            Err(e) => eprintln!("TRACE other error: {e}"),
        }
    }
    match result {
        Ok(config) => check_config(&config),
        Err(e) => check_error(&e, &project, &stack),
    }
});

fn check_error(e: &StackError, project: &str, stack: &str) {
    let StackError::Invalid(diags) = e else {
        panic!("load_from_strs returned a non-diagnostic error: {e}");
    };
    assert!(!diags.is_empty(), "an error without diagnostics");
    for d in diags {
        let text = match d.file.to_str() {
            Some(PROJECT_FILE) => project,
            Some(STACK_FILE) => stack,
            _ => panic!("diagnostic names an unknown file: {d}"),
        };
        let lines = text.matches('\n').count() + 1;
        assert!(
            d.line >= 1 && d.line <= lines && d.col >= 1,
            "position out of the file ({lines} lines): {d}"
        );
        assert!(!d.message.is_empty(), "empty message: {d:?}");
        assert!(!d.to_string().contains(": ``: "), "empty field shown: {d}");
    }
    let shown = e.to_string();
    assert!(shown.contains(".toml:"), "{shown}");
}

#[derive(serde::Deserialize)]
struct Doc {
    hostname: String,
    write_files: Vec<WriteFile>,
}

#[derive(serde::Deserialize)]
struct WriteFile {
    path: String,
    content: String,
    encoding: Option<String>,
}

fn check_config(config: &Config) {
    for w in &config.warnings {
        assert!(!w.is_empty());
    }
    for agent in &config.agents {
        let doc = render::render(config, agent, &Values::Masked).unwrap_or_else(|e| {
            panic!(
                "agent {} of a valid config does not render: {e}",
                agent.name
            )
        });
        assert!(
            doc.starts_with("#cloud-config\n"),
            "not a cloud-config:\n{doc}"
        );
        let parsed: Doc = serde_saphyr::from_str(&doc)
            .unwrap_or_else(|e| panic!("rendered document is not YAML ({e}):\n{doc}"));
        assert_eq!(parsed.hostname, agent.hostname);
        let files: BTreeMap<&str, &WriteFile> = parsed
            .write_files
            .iter()
            .map(|f| (f.path.as_str(), f))
            .collect();
        for (i, step) in boot::STEPS.iter().enumerate() {
            let shim = format!(
                "/var/lib/cloud/scripts/per-instance/agent-army-{}-{}",
                i + 1,
                step.name
            );
            assert!(files.contains_key(shim.as_str()), "{shim} missing");
        }
        let identity = files
            .get("/run/agent-army/stage/workspace/IDENTITY.md")
            .expect("IDENTITY.md is written");
        if !agent.workspace_files.contains_key("IDENTITY.md") {
            assert_eq!(identity.encoding, None);
            assert_eq!(
                identity.content,
                format!(
                    "# IDENTITY.md\n\n- Name: {}\n- Role: {}\n",
                    agent.name, agent.role
                ),
                "role does not survive YAML"
            );
        }
        for rel in agent.workspace_files.keys() {
            let path = format!("/run/agent-army/stage/workspace/{rel}");
            assert!(files.contains_key(path.as_str()), "{path} missing");
        }
        let env_file = files
            .get("/run/agent-army/stage/agent.env")
            .expect("agent.env is written");
        // Built-ins, overridden by the agent's env, overridden by its (masked) secrets.
        let mut want: BTreeMap<String, String> = [
            ("AGENT_ARMY_PROJECT", &config.project),
            ("AGENT_ARMY_STACK", &config.stack),
            ("AGENT_ARMY_AGENT", &agent.name),
            ("AGENT_ARMY_ROLE", &agent.role),
            ("OPENCLAW_GATEWAY_TOKEN", &"********".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        want.extend(agent.env.clone());
        want.extend(
            agent
                .secrets
                .keys()
                .map(|k| (k.clone(), "********".to_string())),
        );
        assert_eq!(
            parse_env_file(&env_file.content),
            want,
            "the env file does not give back the values:\n{}",
            env_file.content
        );
        match render::user_data(config, agent, &Values::Masked) {
            Ok(bytes) => assert!(
                bytes.starts_with(b"#cloud-config\n") || bytes.starts_with(&[0x1f, 0x8b]),
                "user data is neither cloud-config nor gzip"
            ),
            Err(RenderError::TooLarge { .. }) => {}
            Err(e) => panic!("user data of agent {}: {e}", agent.name),
        }
    }
}

/// `NAME=word` assignments, one per line, where a word is what `sh_quote` writes: bare
/// characters and `'...'` segments, with `\'` between them. A small POSIX word reader, so a
/// quoting bug shows as a mismatch instead of needing a shell per execution.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        if chars.peek() == Some(&'#') {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            continue;
        }
        let mut name = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            name.push(c);
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\n' => break,
                '\'' => {
                    for q in chars.by_ref() {
                        if q == '\'' {
                            break;
                        }
                        value.push(q);
                    }
                }
                '\\' => value.extend(chars.next()),
                c => {
                    assert!(
                        c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c),
                        "unquoted {c:?} in the env file:\n{text}"
                    );
                    value.push(c);
                }
            }
        }
        out.insert(name, value);
    }
    out
}

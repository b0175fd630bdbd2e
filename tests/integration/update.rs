//! In-place updates: `deploy` changing an agent's configuration over ssh, against a real sshd on
//! 127.0.0.1 whose sessions write under a scratch root standing in for the VM's file system
//! (`AGENT_ARMY_ROOT`). The helper is the one first boot installs (`agent-army-agent`, taken
//! from the rendered user data), first run as boot's steps 5 and 6 run it; `systemctl`, `npm`
//! and `curl` are stand-ins that record their arguments (no systemd or registry here).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ssh_status::{Keys, aws_env, openssh_env, sshd_with_env};
use crate::support::openclaw::Rendered;
use crate::support::servers::{Moto, free_port};
use crate::support::{Out, Project, Run, gateway_tokens, state_json};

const HELPER: &str = "/usr/local/sbin/agent-army-agent";
const STAGE: &str = "/run/agent-army/stage/";
const ENV_FILE: &str = "etc/openclaw-agent.env";
const WS: &str = "var/lib/openclaw/.openclaw/workspace";

/// A stand-in that appends its name and arguments to `$FAKE_LOG`.
const FAKE: &str = r#"#!/bin/bash
echo "$(basename "$0") $*" >>"$FAKE_LOG"
# `gateway-down` next to the log: the gateway keeps exiting (restarted 3 times, never answers).
down="$(dirname "$FAKE_LOG")/gateway-down"
case "$(basename "$0") $1" in
  "systemctl show") if [ -e "$down" ]; then echo 3; else echo 0; fi ;;
  curl*)
    if [ -e "$down" ]; then exit 7; fi
    # The header file curl is given (`-H @FILE`): what the gateway would have been sent.
    prev=
    for a in "$@"; do
      if [ "$prev" = -H ] && [ "${a#@}" != "$a" ]; then echo "header $(cat "${a#@}")" >>"$FAKE_LOG"; fi
      prev=$a
    done
    ;;
esac
"#;

/// The uid and gid of the VM's `openclaw` user (scripts/test adds it, as step 3 does).
fn openclaw_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let o = Command::new("id")
            .args([flag, "openclaw"])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the system user openclaw must exist: run the suite through scripts/test"
        );
        String::from_utf8(o.stdout).unwrap().trim().parse().unwrap()
    };
    (id("-u"), id("-g"))
}

/// The VM: a scratch root, the helper and the stand-ins, and their log.
struct Vm {
    root: tempfile::TempDir,
    bin: tempfile::TempDir,
}

/// Path → (mode, uid, gid, bytes) of every file under the root (the stage and the helper's own
/// record aside).
type Tree = BTreeMap<String, (u32, u32, u32, Vec<u8>)>;

impl Vm {
    fn new(rendered: &Rendered) -> Vm {
        let (uid, gid) = openclaw_ids();
        let root = tempfile::tempdir().unwrap();
        let bin = tempfile::tempdir().unwrap();
        for d in [root.path(), bin.path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // The agent's home, as step 3 makes it.
        let home = root.path().join("var/lib/openclaw");
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        for name in ["systemctl", "npm", "curl", "journalctl"] {
            write_exec(&bin.path().join(name), FAKE);
        }
        write_exec(&bin.path().join("agent-army-agent"), rendered.file(HELPER));
        let log = bin.path().join("log");
        std::fs::write(&log, "").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
        Vm { root, bin }
    }

    fn log_path(&self) -> PathBuf {
        self.bin.path().join("log")
    }

    /// The environment of the VM's sessions: the stand-ins and the helper on PATH.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin.path().display()),
            ),
            (
                "AGENT_ARMY_ROOT".into(),
                self.root.path().display().to_string(),
            ),
            ("FAKE_LOG".into(), self.log_path().display().to_string()),
        ]
    }

    fn set_env(&self) -> String {
        self.env()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// First boot's steps 5 and 6: the rendered stage, installed by the helper.
    fn boot(&self, rendered: &Rendered) {
        let stage = self.root.path().join("run/agent-army/stage");
        for (path, content) in &rendered.files {
            if let Some(rel) = path.strip_prefix(STAGE) {
                let dst = stage.join(rel);
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::write(dst, content).unwrap();
            }
        }
        for step in ["packages", "files"] {
            let out = Command::new(self.bin.path().join("agent-army-agent"))
                .arg(step)
                .arg(&stage)
                .env_clear()
                .envs(self.env())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "boot: agent-army-agent {step}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(&stage).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap()
    }

    fn clear_log(&self) {
        std::fs::write(self.log_path(), "").unwrap();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn tree(&self) -> Tree {
        let mut out = Tree::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let rel = p
                    .strip_prefix(self.root.path())
                    .unwrap()
                    .display()
                    .to_string();
                if rel == "run" || rel == "var/lib/agent-army/installed" {
                    continue;
                }
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.is_dir() {
                    stack.push(p);
                } else {
                    let bytes = std::fs::read(&p).unwrap_or_default();
                    out.insert(rel, (m.mode() & 0o7777, m.uid(), m.gid(), bytes));
                }
            }
        }
        out
    }

    /// A file the agent itself made, owned by its user.
    fn agent_writes(&self, rel: &str, text: &str) {
        let (uid, gid) = openclaw_ids();
        let p = self.path(&format!("{WS}/{rel}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::os::unix::fs::chown(p.parent().unwrap(), Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The files that differ between two trees: `path` (changed), `+path`, `-path`.
fn changes(before: &Tree, after: &Tree) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (k, v) in after {
        match before.get(k) {
            None => {
                out.insert(format!("+{k}"));
            }
            Some(b) if b != v => {
                out.insert(k.clone());
            }
            _ => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.insert(format!("-{k}"));
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn assert_file(tree: &Tree, rel: &str, mode: u32, uid: u32, gid: u32) {
    let (m, u, g, _) = tree
        .get(rel)
        .unwrap_or_else(|| panic!("{rel} is missing on the VM"));
    assert_eq!(
        (*m, *u, *g),
        (mode, uid, gid),
        "{rel}: mode {m:o} owner {u}:{g}"
    );
}

/// The example project with agent-pm alone, deployed to moto.
fn deployed_pm() -> (Moto, Project) {
    let moto = Moto::start();
    let p = Project::example();
    let toml = p.read("agent-army.toml");
    let cut = toml.find("[[agents]]\nname = \"agent-eng\"").unwrap();
    p.write(
        "agent-army.toml",
        &toml[..cut].replace(
            "workspace = \"agents/pm\"\n",
            "workspace = \"agents/pm\"\nenv = { PM_LEVEL = \"1\" }\n",
        ),
    );
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run()
        .success();
    (moto, p)
}

/// Edit the project file: replace `from` (which must be there) by `to`.
fn edit(p: &Project, file: &str, from: &str, to: &str) {
    let text = p.read(file);
    assert!(text.contains(from), "{file} has no {from:?}");
    p.write(file, &text.replacen(from, to, 1));
}

/// Records every command line of every process while it runs (every 2 ms from /proc).
struct ArgvWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<BTreeSet<String>>,
}

impl ArgvWatch {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !s.load(Ordering::SeqCst) {
                if let Ok(rd) = std::fs::read_dir("/proc") {
                    for e in rd.flatten() {
                        if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
                            let line = String::from_utf8_lossy(&b).replace('\0', " ");
                            if !line.trim().is_empty() {
                                seen.insert(line);
                            }
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            seen
        });
        ArgvWatch { stop, handle }
    }
    fn finish(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

#[test]
fn in_place_updates_change_exactly_their_files_over_ssh() {
    let (uid, gid) = openclaw_ids();
    let (moto, p) = deployed_pm();
    let rendered = Rendered::of(&p, "prod", "agent-pm");
    let vm = Vm::new(&rendered);
    vm.boot(&rendered);
    let keys = Keys::new();
    let port = free_port();
    let _sshd = sshd_with_env(&keys, "host_a", port, &vm.set_env());
    let run = || -> Run {
        openssh_env(aws_env(p.run(), &moto), &keys, port)
            .args(["-s", "prod"])
            .env("NO_COLOR", "1")
    };
    let deploy = |extra: &[&str]| -> Out {
        let mut args = vec!["deploy", "--yes", "--ssh-user", "root"];
        args.extend_from_slice(extra);
        run().args(args).run()
    };
    // `plan` probes the agents it would update, as `deploy` connects.
    let plan = |extra: &[&str]| -> Out {
        let mut args = vec!["plan", "--ssh-user", "root"];
        args.extend_from_slice(extra);
        let out = run().args(args).run();
        assert!(
            !out.stdout.contains("unreachable"),
            "the agent answers over ssh: {}",
            out.stdout
        );
        out
    };
    let token = gateway_tokens(
        &run()
            .args(["outputs", "--show-secrets", "--output", "json"])
            .run(),
    )["agent-pm"]
        .clone();

    // What first boot wrote, owners and modes included.
    let boot = vm.tree();
    assert_file(&boot, ENV_FILE, 0o640, 0, gid);
    assert_file(
        &boot,
        "var/lib/openclaw/.openclaw/openclaw.json",
        0o600,
        uid,
        gid,
    );
    assert_file(&boot, &format!("{WS}/AGENTS.md"), 0o644, uid, gid);
    assert_file(&boot, &format!("{WS}/IDENTITY.md"), 0o644, uid, gid);
    assert_file(&boot, "usr/local/bin/openclaw-agent", 0o755, 0, 0);
    assert_file(
        &boot,
        "etc/systemd/system/openclaw-gateway.service",
        0o644,
        0,
        0,
    );
    let boot_log = vm.log();
    assert!(boot_log.contains("npm install -g --prefix"), "{boot_log}");
    assert!(
        boot_log.contains("systemctl restart openclaw-gateway.service"),
        "{boot_log}"
    );
    // The agent's own files: its notes and its memory.
    vm.agent_writes("notes/todo.md", "- ship it\n");
    vm.agent_writes("memory/2026-11-29.md", "the user likes short answers\n");
    vm.clear_log();

    // Nothing changed: no update, no connection.
    run()
        .args(["deploy", "--yes"])
        .run()
        .success()
        .stdout_has("No changes");
    assert_eq!(vm.log(), "", "an unchanged deploy ran something on the VM");

    // Each kind of agent input, one at a time: the plan names it, the deploy changes exactly
    // its files, restarts the gateway and waits for an authenticated answer.
    struct Case {
        what: &'static str,
        change: Box<dyn Fn(&Project)>,
        plan: &'static str,
        files: Vec<String>,
    }
    let cases = vec![
        Case {
            what: "an env value",
            change: Box::new(|p| {
                edit(p, "agent-army.toml", "PM_LEVEL = \"1\"", "PM_LEVEL = \"2\"")
            }),
            plan: "update in place: env.PM_LEVEL;",
            files: vec![ENV_FILE.into()],
        },
        Case {
            what: "a workspace file",
            change: Box::new(|p| edit(p, "agents/pm/AGENTS.md", "#", "# (edited)\n#")),
            plan: "update in place: workspace/AGENTS.md;",
            files: vec![format!("{WS}/AGENTS.md")],
        },
        Case {
            what: "a new workspace file",
            change: Box::new(|p| p.write("agents/pm/docs/STYLE.md", "Short sentences.\n")),
            plan: "update in place: workspace/docs/STYLE.md (new);",
            files: vec![format!("+{WS}/docs/STYLE.md")],
        },
        Case {
            what: "the role",
            change: Box::new(|p| edit(p, "agent-army.toml", "Product manager:", "Product owner:")),
            plan: "update in place: env.AGENT_ARMY_ROLE, workspace/IDENTITY.md, workspace/SOUL.md;",
            files: vec![
                ENV_FILE.into(),
                format!("{WS}/IDENTITY.md"),
                format!("{WS}/SOUL.md"),
            ],
        },
        Case {
            what: "the model",
            change: Box::new(|p| {
                edit(
                    p,
                    "agent-army.toml",
                    "workspace = \"agents/pm\"\n",
                    "workspace = \"agents/pm\"\nmodel = \"anthropic/claude-opus-5\"\n",
                )
            }),
            plan: "update in place: openclaw.json;",
            files: vec!["var/lib/openclaw/.openclaw/openclaw.json".into()],
        },
        Case {
            what: "a workspace file removed from the project",
            change: Box::new(|p| {
                std::fs::remove_file(p.path().join("agents/pm/docs/STYLE.md")).unwrap()
            }),
            plan: "update in place: workspace/docs/STYLE.md (removed);",
            files: vec![format!("-{WS}/docs/STYLE.md")],
        },
    ];
    for case in cases {
        (case.change)(&p);
        let before = vm.tree();
        let planned = plan(&[]);
        planned
            .success()
            .stdout_has(&format!("~ agent-pm ({}", case.plan))
            .stdout_has("1 to update in place, 0 to replace");
        let out = deploy(&[]);
        out.success();
        // A transcript, for people reading the test's output.
        eprintln!(
            "--- {}: plan\n{}--- deploy\n{}{}",
            case.what, planned.stdout, out.stdout, out.stderr
        );
        let after = vm.tree();
        assert_eq!(
            changes(&before, &after),
            case.files.iter().cloned().collect::<BTreeSet<_>>(),
            "{}: {}",
            case.what,
            out.stderr
        );
        let log = vm.log();
        assert!(
            log.contains("systemctl restart openclaw-gateway.service"),
            "{}: {log}",
            case.what
        );
        assert!(
            log.contains(&format!("header Authorization: Bearer {token}")),
            "{}: the gateway was not asked with its token: {log}",
            case.what
        );
        assert!(!log.contains("npm"), "{}: {log}", case.what);
        // Recorded: the next deploy does nothing.
        vm.clear_log();
        run()
            .args(["deploy", "--yes"])
            .run()
            .success()
            .stdout_has("No changes");
        assert_eq!(vm.log(), "", "{}: a second deploy ran something", case.what);
    }
    // The agent's files survived every sync; owners and modes are first boot's.
    let now = vm.tree();
    assert!(now.contains_key(&format!("{WS}/notes/todo.md")));
    assert!(now.contains_key(&format!("{WS}/memory/2026-11-29.md")));
    assert_file(&now, ENV_FILE, 0o640, 0, gid);
    assert_file(
        &now,
        "var/lib/openclaw/.openclaw/openclaw.json",
        0o600,
        uid,
        gid,
    );
    assert_file(&now, &format!("{WS}/AGENTS.md"), 0o644, uid, gid);
    let state = state_json(&p, "prod").unwrap();
    assert!(
        state["agents"]["agent-pm"]["inputs"]["config"]["env.PM_LEVEL"].is_string(),
        "{state:#}"
    );

    // Packages: the OpenClaw version (npm, as root) and the coding-agent CLIs (npm, for the
    // agent's user). Each is installed and no file of the configuration is touched.
    let root = vm.root.path().display().to_string();
    let packages = [
        (
            "[defaults]\n",
            "[defaults]\nopenclaw_version = \"2026.9.7\"\n",
            "update in place: openclaw version;",
            format!(
                "npm install -g --prefix {root}/usr/local --no-fund --no-audit openclaw@2026.9.7"
            ),
        ),
        (
            "workspace = \"agents/pm\"\n",
            "workspace = \"agents/pm\"\ncoding_agents = [\"codex\"]\n",
            "update in place: coding agents (new);",
            format!(
                "npm install -g --prefix {root}/var/lib/openclaw/.local --no-fund --no-audit @openai/codex"
            ),
        ),
    ];
    for (from, to, planned, installed) in packages {
        edit(&p, "agent-army.toml", from, to);
        plan(&[]).success().stdout_has(planned);
        let before = vm.tree();
        deploy(&[]).success();
        assert_eq!(changes(&before, &vm.tree()), set(&[]));
        let log = vm.log();
        assert!(log.contains(&installed), "{log}");
        vm.clear_log();
    }

    // A secret: it reaches the environment file, on stdin; no process ever has it in argv.
    let secret = "sk-ant-ROTATED-5e4d3c2b1a";
    run()
        .args(["secrets", "set", "ANTHROPIC_API_KEY"])
        .stdin(secret)
        .run()
        .success();
    plan(&[])
        .success()
        .stdout_has("update in place: secret.ANTHROPIC_API_KEY;");
    let before = vm.tree();
    let watch = ArgvWatch::start();
    let out = deploy(&[]);
    let seen = watch.finish();
    out.success();
    assert_eq!(changes(&before, &vm.tree()), set(&[ENV_FILE]));
    assert!(
        std::fs::read_to_string(vm.path(ENV_FILE))
            .unwrap()
            .contains(secret),
        "the new secret is not in the environment file"
    );
    assert!(
        seen.iter().any(|l| l.contains("agent-army-agent update")),
        "the watch saw no update run: {seen:?}"
    );
    let leaks: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains(secret) || l.contains(&token))
        .collect();
    assert!(leaks.is_empty(), "a secret in argv: {leaks:?}");
    vm.clear_log();

    // --prune: the agent's notes go, its memory stays; --reset-memory: the memory goes.
    plan(&["--prune"])
        .success()
        .stdout_has("update in place: workspace pruned;");
    let before = vm.tree();
    deploy(&["--prune"]).success();
    assert_eq!(
        changes(&before, &vm.tree()),
        set(&[&format!("-{WS}/notes/todo.md")])
    );
    let before = vm.tree();
    deploy(&["--reset-memory"]).success();
    assert_eq!(
        changes(&before, &vm.tree()),
        set(&[&format!("-{WS}/memory/2026-11-29.md")])
    );
    vm.clear_log();
    run()
        .args(["deploy", "--yes"])
        .run()
        .success()
        .stdout_has("No changes");
    assert_eq!(vm.log(), "");
}

#[test]
fn an_unreachable_agent_is_planned_as_such_and_fails_alone() {
    let (moto, p) = deployed_pm();
    let keys = Keys::new();
    // Nothing listens on this port.
    let port = free_port();
    let run = || -> Run {
        openssh_env(aws_env(p.run(), &moto), &keys, port)
            .args(["-s", "prod"])
            .env("NO_COLOR", "1")
    };
    edit(
        &p,
        "agent-army.toml",
        "PM_LEVEL = \"1\"",
        "PM_LEVEL = \"2\"",
    );
    let plan = run().arg("plan").run();
    plan.success()
        .stdout_has("~ agent-pm (update in place: env.PM_LEVEL;")
        .stdout_has("unreachable: not reachable over ssh:")
        .stdout_has("`--replace agent-pm` rebuilds it");
    let out = run().args(["deploy", "--yes", "--ssh-user", "root"]).run();
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("agent-pm") && out.stderr.contains("Unreachable"),
        "{}",
        out.stderr
    );
    // Nothing recorded: the update is still planned.
    run()
        .arg("plan")
        .run()
        .success()
        .stdout_has("update in place: env.PM_LEVEL;");
}

#[test]
fn an_update_whose_gateway_does_not_come_back_fails_with_the_agents_own_words() {
    let (moto, p) = deployed_pm();
    let rendered = Rendered::of(&p, "prod", "agent-pm");
    let vm = Vm::new(&rendered);
    vm.boot(&rendered);
    let keys = Keys::new();
    let port = free_port();
    let _sshd = sshd_with_env(&keys, "host_a", port, &vm.set_env());
    let run = || -> Run {
        openssh_env(aws_env(p.run(), &moto), &keys, port)
            .args(["-s", "prod"])
            .env("NO_COLOR", "1")
    };
    std::fs::write(vm.bin.path().join("gateway-down"), "").unwrap();
    edit(
        &p,
        "agent-army.toml",
        "PM_LEVEL = \"1\"",
        "PM_LEVEL = \"2\"",
    );
    let out = run().args(["deploy", "--yes", "--ssh-user", "root"]).run();
    assert_ne!(out.code, 0, "{}", out.stdout);
    // The helper's own message, not a generic line about the command that failed (as a real VM
    // showed: "agent-army-agent: line 197: `return 1` exited 1").
    out.stderr_has(
        "agent-pm: UpdateFailed: agent-army-agent: the gateway keeps exiting (3 restarts)",
    )
    .stderr_has("fix what the agent reported and deploy again");
    assert!(!out.stderr.contains("` exited"), "{}", out.stderr);
    // The new files are there; the update stays planned until the gateway answers.
    let env = std::fs::read_to_string(vm.path(ENV_FILE)).unwrap();
    assert!(env.contains("PM_LEVEL=2"), "{env}");
    run()
        .arg("plan")
        .run()
        .success()
        .stdout_has("update in place: env.PM_LEVEL;");
}

//! The binary without a cloud: init, validate, plan, render, secrets, bad input.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{API_SENTINEL, Project, Run, TS_SENTINEL, state_json};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_scaffolds_identity_and_gitignore_once() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let proj = dir.path().join("my-fleet");
    std::fs::create_dir_all(&proj).unwrap();
    std::fs::write(proj.join(".gitignore"), "target\n").unwrap();
    let out = Run::new(&proj)
        .env("HOME", home.display().to_string())
        .arg("init")
        .run();
    out.success()
        .stdout_has("created agent-army.toml and stacks/dev.toml");
    let identity = home.join(".config/agent-army/identity.txt");
    assert_eq!(mode(&identity), 0o600);
    let gi = std::fs::read_to_string(proj.join(".gitignore")).unwrap();
    assert_eq!(gi, "target\n.agent-army/\nrendered/\n");
    let project = std::fs::read_to_string(proj.join("agent-army.toml")).unwrap();
    assert!(project.contains("name = \"my-fleet\""));
    let public = std::fs::read_to_string(&identity)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    assert!(
        std::fs::read_to_string(proj.join("stacks/dev.toml"))
            .unwrap()
            .contains(&public)
    );
    // init's JSON, in another folder with the same identity.
    let other = dir.path().join("other-fleet");
    std::fs::create_dir_all(&other).unwrap();
    let doc = Run::new(&other)
        .env("HOME", home.display().to_string())
        .args(["-o", "json", "init"])
        .run()
        .json();
    assert_eq!(doc["recipient"], public.as_str());
    assert_eq!(doc["identity_created"], false);
    assert_eq!(doc["stack_file"], "stacks/dev.toml");
    // The scaffold is a valid project: plan works straight away.
    Run::new(&proj)
        .env("HOME", home.display().to_string())
        .arg("plan")
        .run()
        .success();
    // A second init scaffolds nothing: it says the project exists and how to join a stack.
    let before = std::fs::read_to_string(proj.join("agent-army.toml")).unwrap();
    let out = Run::new(&proj)
        .env("HOME", home.display().to_string())
        .arg("init")
        .run();
    out.success()
        .stdout_has("already holds an agent-army project")
        .stdout_has("agent-army -s STACK init");
    assert_eq!(
        std::fs::read_to_string(proj.join("agent-army.toml")).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read_to_string(proj.join(".gitignore")).unwrap(),
        gi
    );
}

/// A teammate (or a CI identity) joins an existing project: `init -s STACK` creates the
/// identity and adds its recipient to that stack, keeping the file's comments; secrets set
/// afterwards are readable by both.
#[test]
fn init_in_an_existing_project_adds_a_new_identity_to_a_stack() {
    let p = Project::example();
    let teammate = tempfile::tempdir().unwrap();
    let their_identity = teammate.path().join("identity.txt");
    let as_teammate = |args: &[&str]| {
        p.run()
            .env("AGENT_ARMY_IDENTITY", their_identity.display().to_string())
            .args(args)
            .run()
    };
    let before = p.read("stacks/prod.toml");
    as_teammate(&["-s", "dev", "init"])
        .success()
        .stdout_has("added it to `age_recipients` in stacks/dev.toml")
        .stdout_has("secrets set NAME");
    assert!(their_identity.exists(), "identity created");
    let key = std::fs::read_to_string(&their_identity).unwrap();
    let recipient = key
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    let dev = p.read("stacks/dev.toml");
    assert!(
        dev.contains(&recipient) && dev.contains(&p.public_key),
        "{dev}"
    );
    assert!(
        dev.contains("# Who can decrypt this stack's secrets"),
        "comments kept"
    );
    assert_eq!(p.read("stacks/prod.toml"), before, "other stacks untouched");
    // Again: nothing to add.
    as_teammate(&["-s", "dev", "init"])
        .success()
        .stdout_has("already a recipient");
    assert_eq!(p.read("stacks/dev.toml"), dev);
    // A secret set by the original member is readable by the newcomer.
    p.run()
        .args(["-s", "dev", "secrets", "set", "EXTRA_TOKEN"])
        .stdin("s3cr3t-value")
        .run()
        .success();
    as_teammate(&["-s", "dev", "secrets", "get", "EXTRA_TOKEN", "--show"])
        .success()
        .stdout_has("s3cr3t-value");
}

#[test]
fn plan_works_offline_without_credentials_or_identity() {
    let p = Project::example();
    let out = p
        .run()
        .env_remove("AGENT_ARMY_IDENTITY")
        .env_remove("TS_AUTHKEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("HOME", "/nonexistent")
        .args(["-s", "prod", "plan"])
        .run();
    out.success()
        .stdout_has("+ security group (inbound: none)")
        .stdout_has("hostname: prod-agent-pm.tail12345.ts.net")
        .stdout_has("gateway:  https://prod-agent-pm.tail12345.ts.net/#token=********")
        .stdout_has(
            "Plan: 3 to create, 0 to update in place, 0 to replace, 0 to destroy, 0 unchanged",
        );
    insta::assert_snapshot!("plan_prod_offline", out.stdout);
    // The default stack comes from the project file; --stack and the env var beat it.
    p.run()
        .arg("plan")
        .run()
        .success()
        .stdout_has("Stack `dev`");
    p.run()
        .env("AGENT_ARMY_STACK", "prod")
        .arg("plan")
        .run()
        .success()
        .stdout_has("Stack `prod`");
    p.run()
        .env("AGENT_ARMY_STACK", "prod")
        .args(["--stack", "dev", "plan"])
        .run()
        .success()
        .stdout_has("Stack `dev`");
    let j = p.run().args(["-s", "dev", "plan", "-o", "json"]).run();
    j.success();
    assert_eq!(j.json()["changes"], true);
    // --detailed-exitcode: 2 when there are changes.
    p.run().args(["plan", "--detailed-exitcode"]).run().code(2);
    assert!(
        !p.path().join(".agent-army").exists(),
        "plan writes nothing"
    );
}

#[test]
fn validate_insists_that_secrets_resolve() {
    let p = Project::example();
    p.run()
        .args(["-s", "dev", "validate"])
        .run()
        .success()
        .stdout_has("Stack `dev` is valid: 3 agents");
    p.run()
        .env_remove("TS_AUTHKEY")
        .args(["-s", "dev", "validate"])
        .run()
        .code(4)
        .stderr_has(
            "error: secret `tailscale_auth_key`: environment variable `TS_AUTHKEY` is not set",
        );
}

fn schema_check(path: &std::path::Path) {
    let out = Command::new("cloud-init")
        .args(["schema", "--config-file"])
        .arg(path)
        .output()
        .expect("cloud-init (apt package cloud-init) must be installed");
    assert!(
        out.status.success(),
        "cloud-init schema rejected {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every script the user data carries passes `bash -n` (or `sh -n`) and shellcheck (warnings
/// and errors), and the metadata guard passes `nft --check` (in a user and network namespace of
/// its own; the agent's user name is swapped for `root`, which exists here).
#[test]
fn rendered_scripts_pass_shellcheck_and_the_guard_passes_nft_check() {
    struct File {
        path: String,
        content: String,
    }
    let p = Project::example();
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for stack in ["dev", "prod"] {
        let out = format!("rendered/{stack}");
        p.run()
            .args(["-s", stack, "render", "--out", &out])
            .run()
            .success();
        for agent in ["agent-pm", "agent-eng", "agent-tester"] {
            let text = p.read(&format!("{out}/{agent}.yaml"));
            let files = crate::support::openclaw::written_files(&text);
            for f in files
                .into_iter()
                .map(|(path, content)| File { path, content })
            {
                let name = f.path.trim_start_matches('/').replace('/', "__");
                let local = dir.path().join(format!("{stack}-{agent}-{name}"));
                let shell = if f.content.starts_with("#!/bin/bash") || f.path.ends_with("/lib.sh") {
                    "bash"
                } else if f.content.starts_with("#!/bin/sh") {
                    "sh"
                } else if f.path.ends_with(".nft") {
                    std::fs::write(&local, f.content.replace("\"openclaw\"", "\"root\"")).unwrap();
                    let out = std::process::Command::new("unshare")
                        .args(["-rn", "/usr/sbin/nft", "--check", "-f"])
                        .arg(&local)
                        .output()
                        .expect("unshare + nft (scripts/test installs nftables)");
                    assert!(
                        out.status.success(),
                        "{}: nft --check: {}",
                        f.path,
                        String::from_utf8_lossy(&out.stderr)
                    );
                    checked += 1;
                    continue;
                } else {
                    continue;
                };
                std::fs::write(&local, &f.content).unwrap();
                let out = std::process::Command::new(shell)
                    .arg("-n")
                    .arg(&local)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}: {shell} -n failed", f.path);
                let out = std::process::Command::new("shellcheck")
                    .args(["-S", "warning", "-s", shell])
                    .arg(&local)
                    .output()
                    .expect("shellcheck (scripts/test installs it)");
                assert!(
                    out.status.success(),
                    "{}:\n{}",
                    f.path,
                    String::from_utf8_lossy(&out.stdout)
                );
                checked += 1;
            }
        }
    }
    // Per agent: lib.sh, run-step, 7 steps, 7 shims, agent-army-boot, the dockerd launcher, the
    // guard, the agent-army-agent helper, and the openclaw-agent wrapper in the stage.
    assert_eq!(checked, 6 * 21, "files checked");
}

#[test]
fn render_passes_cloud_init_schema_for_every_agent_of_both_stacks() {
    let p = Project::example();
    for stack in ["dev", "prod"] {
        let dir = format!("rendered/{stack}");
        p.run()
            .args(["-s", stack, "render", "--out", &dir])
            .run()
            .success();
        for agent in ["agent-pm", "agent-eng", "agent-tester"] {
            let f = p.path().join(&dir).join(format!("{agent}.yaml"));
            schema_check(&f);
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(text.contains(&format!("--hostname={stack}-{agent}")));
            assert!(
                text.contains("OPENCLAW_GATEWAY_TOKEN='********'"),
                "token masked"
            );
            assert!(
                text.contains("\"id\": \"OPENCLAW_GATEWAY_TOKEN\""),
                "token by reference"
            );
        }
    }
    // Real values with --show-secrets: still valid, mode 0600, and the token is stable.
    p.run()
        .args(["-s", "dev", "render", "--out", "shown", "--show-secrets"])
        .run()
        .success();
    let f = p.path().join("shown/agent-pm.yaml");
    schema_check(&f);
    assert_eq!(mode(&f), 0o600);
    let first = std::fs::read_to_string(&f).unwrap();
    assert!(first.contains(TS_SENTINEL) && first.contains(API_SENTINEL));
    p.run()
        .args(["-s", "dev", "render", "--out", "shown", "--show-secrets"])
        .run()
        .success();
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        first,
        "token stable across runs"
    );
    std::fs::remove_dir_all(p.path().join("shown")).unwrap();
    // Gateway keys are in state, encrypted; no sentinel anywhere on disk.
    let st = state_json(&p, "dev").unwrap();
    let key = st["gateway_keys"]["agent-pm"].as_str().unwrap();
    assert!(key.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert_eq!(mode(&p.path().join(".agent-army/state/dev.json")), 0o600);
    p.assert_nowhere_on_disk(TS_SENTINEL);
    p.assert_nowhere_on_disk(API_SENTINEL);
    let token = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("OPENCLAW_GATEWAY_TOKEN="))
        .unwrap();
    assert_eq!(token.len(), 48);
    p.assert_nowhere_on_disk(token);
}

#[test]
fn render_failure_leaves_no_partial_output() {
    let p = Project::example();
    p.run()
        .env_remove("TS_AUTHKEY")
        .args(["-s", "dev", "render", "--out", "out", "--show-secrets"])
        .run()
        .code(4);
    assert!(!p.path().join("out").exists());
}

fn extract_armored(toml_text: &str, key: &str) -> String {
    let v: toml::Table = toml::from_str(toml_text).unwrap();
    v["secrets"][key].as_str().unwrap().to_string()
}

#[test]
fn secrets_set_list_get_and_age_cli_interop() {
    let p = Project::example();
    p.run()
        .args(["-s", "dev", "secrets", "set", "tailscale_auth_key"])
        .stdin(format!("{TS_SENTINEL}\n"))
        .run()
        .success()
        .stderr_has("stored `tailscale_auth_key` encrypted");
    p.run()
        .args([
            "-s",
            "dev",
            "secrets",
            "set",
            "OPENAI_API_KEY",
            "--agent",
            "agent-eng",
        ])
        .stdin("sk-openai-SENTINEL")
        .run()
        .success();
    let stack = p.read("stacks/dev.toml");
    assert!(!stack.contains(TS_SENTINEL) && !stack.contains("sk-openai-SENTINEL"));
    assert!(stack.contains("# CI-friendly"), "comments are kept");
    let list = p.run().args(["-s", "dev", "secrets", "list"]).run();
    list.success()
        .stdout_has("tailscale_auth_key")
        .stdout_has("OPENAI_API_KEY")
        .stdout_has("agent-eng")
        .stdout_has("env:ANTHROPIC_API_KEY");
    assert!(!list.stdout.contains(TS_SENTINEL));
    p.run()
        .env_remove("TS_AUTHKEY")
        .args(["-s", "dev", "secrets", "get", "tailscale_auth_key"])
        .run()
        .success()
        .stdout_has("********");
    let shown = p
        .run()
        .env_remove("TS_AUTHKEY")
        .args([
            "-s",
            "dev",
            "secrets",
            "get",
            "tailscale_auth_key",
            "--show",
        ])
        .run();
    shown.success();
    assert_eq!(shown.stdout.trim_end(), TS_SENTINEL);

    // Debian's age decrypts what we encrypted.
    let armored = extract_armored(&stack, "tailscale_auth_key");
    let ct = p.path().join("ct.age");
    std::fs::write(&ct, &armored).unwrap();
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&p.identity)
        .arg(&ct)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), TS_SENTINEL);
    std::fs::remove_file(&ct).unwrap();

    // We decrypt what Debian's age encrypted.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf %s from-the-age-cli | age -a -r {}",
            p.public_key
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    let armored = String::from_utf8(out.stdout).unwrap();
    let mut doc: toml::Table = toml::from_str(&p.read("stacks/dev.toml")).unwrap();
    doc["secrets"]
        .as_table_mut()
        .unwrap()
        .insert("ANTHROPIC_API_KEY".into(), toml::Value::String(armored));
    p.write("stacks/dev.toml", &toml::to_string(&doc).unwrap());
    let got = p
        .run()
        .args(["-s", "dev", "secrets", "get", "ANTHROPIC_API_KEY", "--show"])
        .run();
    got.success();
    assert_eq!(got.stdout.trim_end(), "from-the-age-cli");
    // The same as JSON, and masked without --show.
    let doc = p
        .run()
        .args([
            "-s",
            "dev",
            "-o",
            "json",
            "secrets",
            "get",
            "ANTHROPIC_API_KEY",
            "--show",
        ])
        .run()
        .json();
    assert_eq!(
        doc,
        serde_json::json!({"name": "ANTHROPIC_API_KEY", "scope": "stack", "value": "from-the-age-cli", "masked": false})
    );
    let doc = p
        .run()
        .args([
            "-s",
            "dev",
            "-o",
            "json",
            "secrets",
            "get",
            "ANTHROPIC_API_KEY",
        ])
        .run()
        .json();
    assert_eq!(doc["value"], serde_json::Value::Null);
    assert_eq!(doc["masked"], true);

    // A wrong identity is reported as such.
    let other = Project::empty();
    p.run()
        .env("AGENT_ARMY_IDENTITY", other.identity.display().to_string())
        .args(["-s", "dev", "secrets", "get", "ANTHROPIC_API_KEY", "--show"])
        .run()
        .code(4)
        .stderr_has("none of the available identities can decrypt it");
    // Values never come from argv.
    p.run()
        .args(["-s", "dev", "secrets", "set", "FOO", "bar"])
        .run()
        .code(64);
}

#[test]
fn passphrase_encryption_for_ci() {
    let p = Project::example();
    let stack = p.read("stacks/dev.toml").replace(
        &format!("age_recipients = [\"{}\"]", p.public_key),
        "age_recipients = []",
    );
    p.write("stacks/dev.toml", &stack);
    p.run()
        .env("AGENT_ARMY_PASSPHRASE", "correct horse battery staple")
        .args(["-s", "dev", "secrets", "set", "ANTHROPIC_API_KEY"])
        .stdin(API_SENTINEL)
        .run()
        .success();
    let got = p
        .run()
        .env_remove("AGENT_ARMY_IDENTITY")
        .env("AGENT_ARMY_PASSPHRASE", "correct horse battery staple")
        .args(["-s", "dev", "secrets", "get", "ANTHROPIC_API_KEY", "--show"])
        .run();
    got.success();
    assert_eq!(got.stdout.trim_end(), API_SENTINEL);
    p.run()
        .env_remove("AGENT_ARMY_IDENTITY")
        .args(["-s", "dev", "secrets", "get", "ANTHROPIC_API_KEY", "--show"])
        .run()
        .code(4)
        .stderr_has("AGENT_ARMY_PASSPHRASE");
}

#[test]
fn gateway_token_matches_ssh_keygen_and_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (apt package openssh-client) must be installed");
    assert!(st.success());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ssh-keygen -y -f {} | sha256sum | cut -c1-48",
            key.display()
        ))
        .output()
        .unwrap();
    let expected = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(expected.len(), 48);
    let pem = std::fs::read_to_string(&key).unwrap();
    let ours = agent_army::token::GatewayKey::from_openssh(&pem).unwrap();
    assert_eq!(ours.token(), expected);
    // And the line we hash is byte-for-byte ssh-keygen's.
    let line = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(line.stdout).unwrap(),
        format!("{}\n", ours.public_openssh())
    );
}

#[test]
fn completions_complete_every_subcommand_and_man_pages_have_their_sections() {
    let p = Project::example();
    let bash = p.run().args(["completions", "bash"]).run();
    bash.success();
    // The bash script offers every subcommand at the first position.
    for sub in [
        "deploy",
        "destroy",
        "plan",
        "status",
        "ssh",
        "pair",
        "open",
        "logs",
        "stacks",
        "completions",
        "man",
    ] {
        assert!(
            bash.stdout.contains(&format!(" {sub} ")) || bash.stdout.contains(&format!(" {sub}\"")),
            "bash lacks {sub}"
        );
    }
    // And bash itself accepts it and completes `agent-army st` to the commands that start so.
    let script = p.path().join("agent-army.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". {}; f=$(complete -p agent-army | sed -E 's/.* -F ([^ ]+) .*/\\1/'); COMP_WORDS=(agent-army st); COMP_CWORD=1; COMP_LINE='agent-army st'; COMP_POINT=13; \"$f\" agent-army st agent-army; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&out.stdout);
    let mut got: Vec<&str> = words.lines().collect();
    got.sort();
    assert_eq!(
        got,
        ["stacks", "state", "status"],
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for shell in ["zsh", "fish", "powershell"] {
        let out = p.run().args(["completions", shell]).run();
        out.success();
        assert!(
            out.stdout.contains("pair") && out.stdout.contains("deploy"),
            "{shell}"
        );
    }
    p.run().args(["completions", "tcsh"]).run().code(64);

    // man: the main page to stdout, one page per command with --out.
    let man = p.run().arg("man").run();
    man.success();
    for heading in [
        ".TH agent-army 1",
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        ".SH VERSION",
    ] {
        assert!(man.stdout.contains(heading), "man page lacks {heading}");
    }
    p.run().args(["man", "--out", "man"]).run().success();
    let deploy = p.read("man/agent-army-deploy.1");
    assert!(
        deploy.contains(".TH agent-army-deploy 1") && deploy.contains("\\-\\-yes"),
        "{deploy}"
    );
    assert!(p.path().join("man/agent-army-pair.1").exists());
}

#[test]
fn stacks_lists_provider_place_agents_and_state() {
    let p = Project::example();
    p.write("stacks/broken.toml", "provider = \"gcp\"\n");
    let out = p.run().arg("stacks").run();
    out.success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("STACK"), "{}", out.stdout);
    assert!(out.stdout.contains("invalid:"), "{}", out.stdout);
    let dev = lines
        .iter()
        .find(|l| l.starts_with("dev (default)"))
        .unwrap();
    assert!(
        dev.contains("hetzner")
            && dev.contains("fsn1")
            && dev.contains(" 3 ")
            && dev.ends_with("none"),
        "{dev}"
    );
    let doc = p.run().args(["-o", "json", "stacks"]).run().json();
    let stacks = doc["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 3);
    let prod = stacks.iter().find(|s| s["stack"] == "prod").unwrap();
    assert_eq!(prod["provider"], "aws");
    assert_eq!(prod["place"], "eu-central-1");
    assert_eq!(prod["agents"], 3);
    assert_eq!(prod["state"], false);
    assert_eq!(prod["default"], false);
    let broken = stacks.iter().find(|s| s["stack"] == "broken").unwrap();
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("stacks/broken.toml"),
        "{broken}"
    );
}

#[test]
fn plan_is_coloured_for_people_and_plain_for_machines() {
    let p = Project::example();
    let plan = |color: Option<&str>, env: &[(&str, &str)], json: bool| {
        let mut r = p.run().env_remove("NO_COLOR");
        for (k, v) in env {
            r = r.env(k, v);
        }
        let mut args = vec!["-s", "prod"];
        if let Some(c) = color {
            args.extend(["--color", c]);
        }
        if json {
            args.extend(["-o", "json"]);
        }
        args.push("plan");
        let out = r.args(args).run();
        out.success();
        out.stdout
    };
    let visible = |s: &str| {
        s.replace("\u{1b}[32m", "<green>")
            .replace("\u{1b}[31m", "<red>")
            .replace("\u{1b}[33m", "<yellow>")
            .replace("\u{1b}[1m", "<bold>")
            .replace("\u{1b}[0m", "</>")
    };
    let coloured = plan(Some("always"), &[], false);
    assert!(
        coloured.contains("\u{1b}[32m  + agent-pm\u{1b}[0m"),
        "{coloured:?}"
    );
    insta::assert_snapshot!("plan_prod_offline_coloured", visible(&coloured));
    // The same words, with colour or without.
    let plain = plan(None, &[("NO_COLOR", "1")], false);
    assert!(!plain.contains('\u{1b}'));
    assert_eq!(anstream::adapter::strip_str(&coloured).to_string(), plain);
    // Not a terminal: plain by default; CLICOLOR_FORCE forces colour; NO_COLOR and
    // `--color never` beat it.
    assert!(!plan(None, &[], false).contains('\u{1b}'));
    assert!(plan(None, &[("CLICOLOR_FORCE", "1")], false).contains('\u{1b}'));
    assert!(!plan(None, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], false).contains('\u{1b}'));
    assert!(!plan(Some("never"), &[("CLICOLOR_FORCE", "1")], false).contains('\u{1b}'));
    // JSON never carries colour.
    let json = plan(Some("always"), &[], true);
    assert!(!json.contains('\u{1b}'));
    serde_json::from_str::<serde_json::Value>(&json).unwrap();
}

/// bash drops a NUL when the agent's environment file is sourced, so the agent would get
/// another value than the one set: refused, and the stack file is left as it was.
#[test]
fn secrets_set_refuses_a_nul_byte() {
    let p = Project::example();
    let before = p.read("stacks/dev.toml");
    let out = p
        .run()
        .args(["-s", "dev", "secrets", "set", "EXTRA_TOKEN"])
        .stdin(b"abc\0def")
        .run();
    assert_ne!(out.code, 0);
    out.stderr_has("contains a NUL byte");
    assert_eq!(p.read("stacks/dev.toml"), before);
}

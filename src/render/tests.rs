use super::*;
use crate::secrets::Secret;
use crate::stack::{Project, load};

fn config_with(project: &str, stack: &str) -> (tempfile::TempDir, Config) {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("stacks")).unwrap();
    std::fs::write(d.path().join("agent-army.toml"), project).unwrap();
    std::fs::write(d.path().join("stacks/dev.toml"), stack).unwrap();
    let p = Project {
        root: d.path().to_path_buf(),
        stack: "dev".into(),
    };
    let c = load(&p).unwrap_or_else(|e| panic!("{e}"));
    (d, c)
}

const PROJECT: &str = r#"[project]
name = "demo"

[defaults.env]
TZ = "UTC"

[[agents]]
name = "agent-pm"
role = "Product manager"
"#;

const HETZNER: &str = r#"provider = "hetzner"
location = "fsn1"
server_type = "cx22"
tailnet = "tail12345.ts.net"

[secrets]
tailscale_auth_key = "env:TS_AUTHKEY"
ANTHROPIC_API_KEY = "env:ANTHROPIC_API_KEY"
"#;

/// The helper travels compressed in the document: its text is reviewed here.
#[test]
fn agent_helper_snapshot() {
    let (_d, c) = config_with(PROJECT, HETZNER);
    let files = machine_files(&c, &c.agents[0], &Values::Masked).unwrap();
    let (_, mode, bytes) = files
        .iter()
        .find(|(p, _, _)| p == AGENT_HELPER)
        .expect("the helper is in the machine files");
    assert_eq!(*mode, "0700");
    insta::assert_snapshot!("agent_army_agent", String::from_utf8_lossy(bytes));
}

#[test]
fn masked_document_snapshot() {
    let (_d, c) = config_with(PROJECT, HETZNER);
    let doc = render(&c, &c.agents[0], &Values::Masked).unwrap();
    insta::assert_snapshot!("cloud_config_agent_pm_masked", doc);
}

/// Where each step's per-instance script is written, in the order of the steps.
fn step_positions(doc: &str) -> Vec<usize> {
    crate::boot::STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = format!(
                "/var/lib/cloud/scripts/per-instance/agent-army-{}-{}",
                i + 1,
                s.name
            );
            doc.find(&path).unwrap_or_else(|| panic!("no {path}"))
        })
        .collect()
}

#[test]
fn tailscale_runs_first_and_key_never_on_command_line() {
    let (_d, c) = config_with(PROJECT, HETZNER);
    let key = Secret::new("tskey-auth-XYZ");
    let values = Values::Real {
        tailscale_auth_key: &key,
        env: [("ANTHROPIC_API_KEY".to_string(), Secret::new("sk-1"))].into(),
        gateway_token: "0123456789abcdef0123456789abcdef0123456789abcdef",
    };
    let doc = render(&c, &c.agents[0], &values).unwrap();
    let pos = step_positions(&doc);
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "steps out of order");
    // The key appears exactly once: as the content of the root-only file.
    assert_eq!(doc.matches("tskey-auth-XYZ").count(), 1);
    let line = doc.lines().find(|l| l.contains("tskey-auth-XYZ")).unwrap();
    assert!(line.trim_start().starts_with("content:"), "{line}");
    assert!(
        doc.contains(
            "tailscale up --auth-key=\"file:$AUTH_KEY_FILE\" --ssh --hostname=dev-agent-pm"
        )
    );
    assert!(doc.contains("trap 'rm -f \"$AUTH_KEY_FILE\"' EXIT"));
    assert!(doc.contains("timeout 120 tailscale serve --bg --https=443 http://127.0.0.1:18789"));
    // No runcmd: cloud-init's runcmd is one script whose last line alone decides its status.
    assert!(!doc.contains("runcmd:"));
    assert!(doc.contains("\"mode\": \"token\""));
    assert!(
        doc.contains("OPENCLAW_GATEWAY_TOKEN=0123456789abcdef0123456789abcdef0123456789abcdef")
    );
    assert_eq!(doc.matches("0123456789abcdef0123456789abcdef").count(), 1);
}

#[derive(serde::Deserialize)]
struct Doc {
    write_files: Vec<WriteFile>,
    #[serde(default)]
    runcmd: Option<Vec<Vec<String>>>,
    hostname: String,
}
#[derive(serde::Deserialize)]
struct WriteFile {
    path: String,
    content: String,
    permissions: String,
    #[serde(default)]
    encoding: Option<String>,
}

fn file<'a>(d: &'a Doc, suffix: &str) -> &'a WriteFile {
    d.write_files
        .iter()
        .find(|f| f.path.ends_with(suffix))
        .unwrap_or_else(|| panic!("no file {suffix}"))
}

#[test]
fn hostile_values_survive_yaml_and_shell_exactly() {
    let nasty =
        "it's \"q\" $(touch /tmp/pwned) `id` ${HOME}\nline2: - [x]\n# not a comment\t\\ é \u{2028}";
    let project = format!(
        "{PROJECT}\n[agents.env]\nEVIL = {}\n",
        toml::Value::String(nasty.into())
    )
    .replace(
        "role = \"Product manager\"",
        &format!("role = {}", toml::Value::String(nasty.into())),
    );
    let (_d, c) = config_with(&project, HETZNER);
    let key = Secret::new(nasty);
    let values = Values::Real {
        tailscale_auth_key: &key,
        env: [("ANTHROPIC_API_KEY".to_string(), Secret::new(nasty))].into(),
        gateway_token: "t",
    };
    let doc = render(&c, &c.agents[0], &values).unwrap();
    let parsed: Doc = serde_saphyr::from_str(&doc).unwrap();
    assert_eq!(parsed.hostname, "dev-agent-pm");
    assert!(parsed.runcmd.is_none());
    let shims = parsed
        .write_files
        .iter()
        .filter(|f| f.path.starts_with("/var/lib/cloud/scripts/per-instance/"))
        .count();
    assert_eq!(shims, crate::boot::STEPS.len());
    assert_eq!(file(&parsed, "tailscale-authkey").content, nasty);
    assert_eq!(file(&parsed, "tailscale-authkey").permissions, "0600");
    // The env file, sourced by bash, gives back every value byte for byte.
    let env_file = &file(&parsed, "agent.env").content;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.env");
    std::fs::write(&path, env_file).unwrap();
    for var in ["EVIL", "ANTHROPIC_API_KEY", "AGENT_ARMY_ROLE"] {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -a; . {}; printf %s \"${var}\"",
                path.display()
            ))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty, "{var}");
    }
    assert!(!std::path::Path::new("/tmp/pwned").exists());
    // The role reaches the workspace verbatim.
    assert!(
        file(&parsed, "workspace/IDENTITY.md")
            .content
            .contains(nasty)
    );
}

#[test]
fn openclaw_json_is_token_auth_on_loopback_behind_serve_with_no_secret() {
    let project = PROJECT.replace(
        "[defaults.env]",
        "[defaults]\nmodel = \"local/qwen3\"\n\n[defaults.openclaw.gateway.http.endpoints.responses]\nenabled = true\n\n[models.providers.local]\nbase_url = \"http://10.0.0.5:8000/v1\"\napi_key = \"LOCAL_LLM_KEY\"\nmodels = [\"qwen3\"]\n\n[defaults.env]",
    );
    let stack = format!("{HETZNER}LOCAL_LLM_KEY = \"env:LOCAL_LLM_KEY\"\n");
    let (_d, c) = config_with(&project, &stack);
    let a = &c.agents[0];
    let v: serde_json::Value = serde_json::from_str(&openclaw_json(&c, a)).unwrap();
    let env_ref = |id: &str| serde_json::json!({"source": "env", "provider": "default", "id": id});
    assert_eq!(v["gateway"]["auth"]["mode"], "token");
    assert_eq!(
        v["gateway"]["auth"]["token"],
        env_ref("OPENCLAW_GATEWAY_TOKEN")
    );
    assert_eq!(v["gateway"]["bind"], "loopback");
    assert_eq!(v["gateway"]["port"], 18789);
    assert_eq!(
        v["gateway"]["trustedProxies"],
        serde_json::json!(["127.0.0.1", "::1"])
    );
    assert_eq!(v["agents"]["defaults"]["model"]["primary"], "local/qwen3");
    assert_eq!(v["agents"]["defaults"]["skipBootstrap"], true);
    let local = &v["models"]["providers"]["local"];
    assert_eq!(local["baseUrl"], "http://10.0.0.5:8000/v1");
    assert_eq!(local["apiKey"], env_ref("LOCAL_LLM_KEY"));
    assert_eq!(local["models"][0]["id"], "qwen3");
    // The pass-through table merged deeply, next to what agent-army sets.
    assert_eq!(
        v["gateway"]["http"]["endpoints"]["responses"]["enabled"],
        true
    );
    assert_eq!(
        v["gateway"]["http"]["endpoints"]["chatCompletions"]["enabled"],
        true
    );
    // The token reaches the VM in the environment file only.
    let values = Values::Real {
        tailscale_auth_key: &Secret::new("k"),
        env: [("LOCAL_LLM_KEY".to_string(), Secret::new("llm-secret"))].into(),
        gateway_token: "tok-123",
    };
    let doc = render(&c, a, &values).unwrap();
    let parsed: Doc = serde_saphyr::from_str(&doc).unwrap();
    assert!(!file(&parsed, "openclaw.json").content.contains("tok-123"));
    let env = &file(&parsed, "agent.env").content;
    assert!(env.contains("OPENCLAW_GATEWAY_TOKEN=tok-123\n"), "{env}");
    assert!(env.contains("LOCAL_LLM_KEY=llm-secret\n"), "{env}");
}

#[test]
fn identity_files_carry_the_role_unless_the_workspace_has_them() {
    let (_d, c) = config_with(PROJECT, HETZNER);
    let mut a = c.agents[0].clone();
    let files = workspace_files(&a);
    let identity = String::from_utf8(files["IDENTITY.md"].clone()).unwrap();
    assert!(identity.contains("Role: Product manager"), "{identity}");
    assert!(files.contains_key("AGENTS.md") && files.contains_key("SOUL.md"));
    a.workspace_files
        .insert("AGENTS.md".into(), b"# mine\n".to_vec());
    assert_eq!(workspace_files(&a)["AGENTS.md"], b"# mine\n");
    assert!(!workspace_files(&a).contains_key("ROLE.md"));
}

fn with_workspace(stack: &str, bytes: usize) -> (tempfile::TempDir, Config) {
    let project = PROJECT.replace(
        "role = \"Product manager\"",
        "role = \"Product manager\"\nworkspace = \"ws\"",
    );
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("stacks")).unwrap();
    std::fs::create_dir_all(d.path().join("ws")).unwrap();
    // Compressible but not trivially so.
    let text: String = (0..bytes)
        .map(|i| (b'a' + ((i * 7 + i / 13) % 26) as u8) as char)
        .collect();
    std::fs::write(d.path().join("ws/NOTES.md"), text).unwrap();
    std::fs::write(d.path().join("agent-army.toml"), project).unwrap();
    std::fs::write(d.path().join("stacks/dev.toml"), stack).unwrap();
    let c = load(&Project {
        root: d.path().to_path_buf(),
        stack: "dev".into(),
    })
    .unwrap();
    (d, c)
}

const AWS: &str = r#"provider = "aws"
region = "eu-central-1"
instance_type = "t3.medium"
tailnet = "tail12345.ts.net"

[secrets]
tailscale_auth_key = "env:TS_AUTHKEY"
"#;

#[test]
fn the_cheap_size_check_agrees_with_the_packing_it_stands_for() {
    // Workspaces of letters with little repetition (about 4.7 bits each gzipped), from well
    // under EC2's limit to well over it: the check before the lock says what packing says.
    let mut seen = (0, 0);
    for kb in 0..=16 {
        let (d, c) = with_workspace(AWS, 0);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: String = (0..kb * 1024)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + ((x >> 33) % 26) as u8) as char
            })
            .collect();
        std::fs::write(d.path().join("ws/NOTES.md"), noise).unwrap();
        let c = load(&Project {
            root: d.path().to_path_buf(),
            stack: c.stack.clone(),
        })
        .unwrap();
        let a = &c.agents[0];
        let packed = user_data(&c, a, &Values::Masked).is_ok();
        let checked = check_user_data(&c, a, &Values::Masked).is_ok();
        assert_eq!(checked, packed, "{kb} KiB of workspace");
        if packed { seen.0 += 1 } else { seen.1 += 1 }
    }
    assert!(
        seen.0 > 0 && seen.1 > 0,
        "both sides of the limit were tried: {seen:?}"
    );
}

#[test]
fn aws_gzips_large_documents_and_rejects_huge_ones() {
    let (_d, c) = with_workspace(AWS, 30_000);
    let ud = user_data(&c, &c.agents[0], &Values::Masked).unwrap();
    assert_eq!(&ud[..2], &[0x1f, 0x8b], "gzip magic");
    assert!(ud.len() <= AWS_USER_DATA_LIMIT);
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&ud[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.starts_with("#cloud-config\n"));

    let (_d, small) = with_workspace(AWS, 100);
    let ud = user_data(&small, &small.agents[0], &Values::Masked).unwrap();
    let plain = render(&small, &small.agents[0], &Values::Masked).unwrap();
    // Documents within the limit stay readable; the boot steps alone now come close to it.
    assert_eq!(
        ud.starts_with(b"#cloud-config\n"),
        plain.len() <= AWS_USER_DATA_LIMIT,
        "{} bytes",
        plain.len()
    );

    // Random bytes do not compress.
    let (d, c) = with_workspace(AWS, 10);
    let mut noise = vec![0u8; 40_000];
    let mut x: u32 = 12345;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    std::fs::write(d.path().join("ws/blob.bin"), noise).unwrap();
    let c = load(&Project {
        root: d.path().to_path_buf(),
        stack: "dev".into(),
    })
    .unwrap_or(c);
    match user_data(&c, &c.agents[0], &Values::Masked) {
        Err(RenderError::TooLarge {
            agent, limit, unit, ..
        }) => {
            assert_eq!(agent, "agent-pm");
            assert_eq!(limit, 16384);
            assert_eq!(unit, "bytes");
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn hetzner_uses_gz_b64_files_when_large() {
    let (_d, c) = with_workspace(HETZNER, 40_000);
    let ud = user_data(&c, &c.agents[0], &Values::Masked).unwrap();
    let text = String::from_utf8(ud).unwrap();
    assert!(text.starts_with("#cloud-config\n"));
    assert!(text.chars().count() <= HETZNER_USER_DATA_LIMIT);
    let parsed: Doc = serde_saphyr::from_str(&text).unwrap();
    let notes = file(&parsed, "workspace/NOTES.md");
    assert_eq!(notes.encoding.as_deref(), Some("gz+b64"));
    let gz = base64::engine::general_purpose::STANDARD
        .decode(&notes.content)
        .unwrap();
    let mut back = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut back)
        .unwrap();
    assert_eq!(back.len(), 40_000);
}

/// The rendered runner, library and step shims, run by bash in a temporary root with stand-in
/// steps: outcomes are recorded, a failure names its step, dependent steps are skipped,
/// independent ones still run, and the staged secrets are gone at the end.
#[test]
fn the_step_runner_records_failures_skips_dependents_and_removes_the_stage() {
    let (_d, c) = config_with(PROJECT, HETZNER);
    let key = Secret::new("tskey-auth-RUNNER");
    let values = Values::Real {
        tailscale_auth_key: &key,
        env: [("ANTHROPIC_API_KEY".to_string(), Secret::new("sk-RUNNER"))].into(),
        gateway_token: "tok",
    };
    let doc = render(&c, &c.agents[0], &values).unwrap();
    let parsed: Doc = serde_saphyr::from_str(&doc).unwrap();
    let root = tempfile::tempdir().unwrap();
    let local = |p: &str| format!("{}{p}", root.path().display());
    let localize = |text: &str| {
        text.replace("/var/lib/agent-army", &local("/var/lib/agent-army"))
            .replace("/run/agent-army", &local("/run/agent-army"))
            .replace("/var/log/agent-army", &local("/var/log/agent-army"))
    };
    for f in &parsed.write_files {
        let dst = std::path::PathBuf::from(local(&f.path));
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::write(&dst, localize(&f.content)).unwrap();
    }
    // Stand-in steps: tailscale fails like a failed join; every other step succeeds.
    let steps = root.path().join("var/lib/agent-army/boot/steps");
    for (i, s) in crate::boot::STEPS.iter().enumerate() {
        let body = if s.name == "tailscale" {
            format!(". {}\nfalse\n", local("/var/lib/agent-army/boot/lib.sh"))
        } else {
            "echo working\n".to_string()
        };
        std::fs::write(steps.join(format!("{}-{}.sh", i + 1, s.name)), body).unwrap();
    }
    let shims = root.path().join("var/lib/cloud/scripts/per-instance");
    let mut names: Vec<String> = std::fs::read_dir(&shims)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut failed = Vec::new();
    let mut console = String::new();
    for n in &names {
        let script = std::fs::read_to_string(shims.join(n)).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        console.push_str(&String::from_utf8_lossy(&out.stdout));
        console.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            failed.push(n.clone());
        }
    }
    // What cloud-init's runparts would report: the failed step and the one that needed it.
    assert_eq!(
        failed,
        ["agent-army-1-tailscale", "agent-army-7-serve"],
        "{console}"
    );
    assert!(
        console.contains("agent-army: boot step 1/7 (tailscale): FAILED (exit 1)"),
        "{console}"
    );
    assert!(console.contains("`false` exited 1"), "{console}");
    assert!(
        console.contains("agent-army: boot step 6/7 (gateway): ok in"),
        "{console}"
    );
    assert!(
        console.contains("SKIPPED: needs tailscale (failed)"),
        "{console}"
    );
    assert!(
        console.contains("first boot FAILED: step 1 (tailscale: failed), 7 (serve: skipped)"),
        "{console}"
    );
    let results =
        std::fs::read_to_string(root.path().join("var/lib/agent-army/boot/results.tsv")).unwrap();
    let boot = crate::boot::Boot::parse(&results);
    assert_eq!(boot.state, "failed");
    assert!(
        boot.summary()
            .starts_with("failed at step 1/7 (tailscale): agent-army: line 2: `false` exited 1"),
        "{}",
        boot.summary()
    );
    assert!(
        boot.summary().ends_with("; skipped: serve"),
        "{}",
        boot.summary()
    );
    // No staged secret and no auth key are left, though the steps that consume them never ran.
    assert!(!root.path().join("run/agent-army/stage").exists());
    assert!(
        !root
            .path()
            .join("run/agent-army/tailscale-authkey")
            .exists()
    );
}

/// openclaw.json is written with sorted keys whatever serde_json's features: its bytes and its
/// fingerprint must be the same from a test build and a release build.
#[test]
fn openclaw_json_keys_are_sorted() {
    let (_d, c) = config_with(PROJECT, HETZNER);
    let text = openclaw_json(&c, &c.agents[0]);
    fn check(v: &serde_json::Value, at: &str) {
        if let serde_json::Value::Object(m) = v {
            let keys: Vec<&String> = m.keys().collect();
            let mut want = keys.clone();
            want.sort();
            assert_eq!(keys, want, "keys of {at}");
            for (k, v) in m {
                check(v, &format!("{at}.{k}"));
            }
        }
    }
    // Parsed with insertion order kept when the feature is on (it is, in test builds).
    check(&serde_json::from_str(&text).unwrap(), "openclaw.json");
    assert!(text.find("\"agents\"").unwrap() < text.find("\"gateway\"").unwrap());
}

//! `deploy --yes` on malformed input, against a live moto behind the recording proxy.
//!
//! A broader table than bad_input.rs (which checks exact messages of `plan`, `validate` and
//! `render`): project and stack files, secrets that do not resolve or decrypt, identities and
//! state files. Every case must exit non-zero with a message naming the file and the field
//! (or the secret), write nothing, and make no cloud call at all: the proxy's request log
//! stays empty. A last, valid deploy proves the log does record calls.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use agent_army::env::Env;
use agent_army::secrets::EncryptTo;

use crate::aws::aws_env;
use crate::support::servers::Moto;
use crate::support::{Project, TS_SENTINEL};

const PROJECT: &str = r#"[project]
name = "demo"

[[agents]]
name = "agent-pm"
role = "PM"

[[agents]]
name = "agent-eng"
role = "Engineer"
"#;

const STACK: &str = r#"provider = "aws"
region = "eu-central-1"
instance_type = "t3.medium"
tailnet = "tail1.ts.net"
age_recipients = ["@RECIPIENT@"]

[aws]
metadata_hop_limit = 1

[secrets]
tailscale_auth_key = "env:TS_AUTHKEY"
ANTHROPIC_API_KEY = "env:ANTHROPIC_API_KEY"
"#;

const PF: &str = "agent-army.toml";
const SF: &str = "stacks/dev.toml";
const STATE: &str = ".agent-army/state/dev.json";

/// Exit codes (README "Exit codes").
const CONFIG: i32 = 3;
const SECRETS: i32 = 4;

struct Case {
    name: &'static str,
    project: String,
    stack: String,
    /// Other files to write first (path, text).
    files: Vec<(&'static str, String)>,
    /// Environment changes: `None` removes the variable.
    env: Vec<(&'static str, Option<String>)>,
    stack_name: &'static str,
    /// Files written as raw bytes, last (e.g. text that is not UTF-8).
    raw: Vec<(&'static str, Vec<u8>)>,
    /// Symlinks to make (path in the project, target).
    links: Vec<(&'static str, PathBuf)>,
    /// Special files to make: (path in the project, "dir" | "fifo" | "loop").
    special: Vec<(&'static str, &'static str)>,
    code: i32,
    /// Text stderr must contain, e.g. the secret's name.
    expect: Vec<String>,
    /// A diagnostic line stderr must hold: `error: <file>:<line>:<col>: `<field>`: ...`.
    diag: Option<(&'static str, String)>,
}

fn case(name: &'static str, project: String, stack: String, code: i32, expect: &[&str]) -> Case {
    Case {
        name,
        project,
        stack,
        files: vec![],
        env: vec![],
        stack_name: "dev",
        raw: vec![],
        links: vec![],
        special: vec![],
        code,
        expect: expect.iter().map(|s| s.to_string()).collect(),
        diag: None,
    }
}

/// A project-file case: the file, and the field in backticks.
fn pcase(name: &'static str, project: String, field: &str) -> Case {
    let mut c = case(name, project, STACK.into(), CONFIG, &[]);
    c.diag = Some((PF, field.to_string()));
    c
}

/// A stack-file case.
fn scase(name: &'static str, stack: String, field: &str) -> Case {
    let mut c = case(name, PROJECT.into(), stack, CONFIG, &[]);
    c.diag = Some((SF, field.to_string()));
    c
}

/// A case whose secret cannot be resolved: stderr names the secret.
fn secret_case(name: &'static str, stack: String, secret: &str) -> Case {
    case(
        name,
        PROJECT.into(),
        stack,
        SECRETS,
        &[&format!("error: secret `{secret}`")],
    )
}

/// A case about the state file.
fn state_case(name: &'static str, state: &str, code: i32, expect: &[&str]) -> Case {
    let mut c = case(name, PROJECT.into(), STACK.into(), code, expect);
    c.files.push((STATE, state.to_string()));
    c
}

fn with_secret(name: &str, value: &str) -> String {
    STACK.replace(
        "ANTHROPIC_API_KEY = \"env:ANTHROPIC_API_KEY\"\n",
        &format!("ANTHROPIC_API_KEY = \"env:ANTHROPIC_API_KEY\"\n{name} = {value}\n"),
    )
}

/// The project with a `[defaults]` table before the agents.
fn with_defaults(body: &str) -> String {
    PROJECT.replacen(
        "[[agents]]",
        &format!("[defaults]\n{body}\n\n[[agents]]"),
        1,
    )
}

fn agent_pm(extra: &str) -> String {
    PROJECT.replace("role = \"PM\"\n", &format!("role = \"PM\"\n{extra}\n"))
}

/// A valid state file of this project with one gateway key.
fn state_with_key(armor: &str) -> String {
    serde_json::json!({
        "version": 1, "project": "demo", "stack": "dev", "provider": "aws", "serial": 3,
        "agents": {}, "gateway_keys": {"agent-pm": armor},
    })
    .to_string()
}

fn cases() -> Vec<Case> {
    let p = PROJECT.to_string();
    let s = STACK.to_string();
    let mut v = vec![
        // ---- agent-army.toml ----
        pcase(
            "wrong type: disk_gb is a string",
            agent_pm("disk_gb = \"big\""),
            "agents.disk_gb",
        ),
        pcase(
            "wrong type: negative disk_gb",
            agent_pm("disk_gb = -1"),
            "agents.disk_gb",
        ),
        pcase(
            "wrong type: project name is a number",
            p.replace("name = \"demo\"", "name = 42"),
            "project.name",
        ),
        pcase(
            "wrong type: role is an array",
            p.replace("role = \"PM\"", "role = [\"PM\"]"),
            "agents.role",
        ),
        pcase(
            "wrong type: env value is a number",
            agent_pm("env = { RETRIES = 3 }"),
            "agents.env",
        ),
        pcase(
            "wrong type: agents is a table",
            "[project]\nname = \"demo\"\n\n[agents]\nname = \"agent-pm\"\nrole = \"PM\"\n".into(),
            "agents",
        ),
        pcase(
            "unknown key in [project]",
            p.replace(
                "name = \"demo\"",
                "name = \"demo\"\ndefualt_stack = \"dev\"",
            ),
            "project.defualt_stack",
        ),
        pcase(
            "unknown table",
            format!("{p}\n[default]\ndisk_gb = 30\n"),
            "default",
        ),
        pcase(
            "unknown key in [defaults]",
            with_defaults("disk = 30"),
            "defaults.disk",
        ),
        pcase(
            "unknown agent key",
            agent_pm("instance = \"t3.large\""),
            "agents.instance",
        ),
        pcase(
            "duplicate agents",
            p.replace("name = \"agent-eng\"", "name = \"agent-pm\""),
            "agents.name",
        ),
        pcase(
            "hostname too long (64 characters)",
            p.replace("agent-eng", &"e".repeat(60)),
            "agents.name",
        ),
        pcase(
            "agent name is not a DNS label",
            p.replace("agent-eng", "agent.eng"),
            "agents.name",
        ),
        pcase(
            "project name is not a DNS label",
            p.replace("name = \"demo\"", "name = \"Demo Project\""),
            "project.name",
        ),
        pcase(
            "empty role",
            p.replace("role = \"PM\"", "role = \"  \""),
            "agents.role",
        ),
        pcase(
            "agent disk too large",
            agent_pm("disk_gb = 20000"),
            "agents.disk_gb",
        ),
        pcase(
            "default disk too small",
            with_defaults("disk_gb = 4"),
            "defaults.disk_gb",
        ),
        pcase(
            "bad default env name",
            with_defaults("env = { \"GIT-AUTHOR\" = \"x\" }"),
            "defaults.env.GIT-AUTHOR",
        ),
        pcase(
            "openclaw version with shell characters",
            with_defaults("openclaw_version = \"latest; curl evil | sh\""),
            "defaults.openclaw_version",
        ),
        pcase(
            "workspace outside the project",
            agent_pm("workspace = \"../../etc\""),
            "agents.workspace",
        ),
        pcase(
            "workspace folder missing",
            agent_pm("workspace = \"agents/nope\""),
            "agents.workspace",
        ),
        pcase(
            "duplicate key (TOML)",
            p.replace("name = \"demo\"", "name = \"demo\"\nname = \"again\""),
            "project.name",
        ),
        pcase(
            "missing [project]",
            p.replace("[project]\nname = \"demo\"\n", ""),
            "project",
        ),
        // A syntax error is found where the parser stops, and named by its table.
        pcase(
            "unterminated inline table (TOML)",
            agent_pm("env = { A = \"1\""),
            "agents",
        ),
        // ---- stacks/dev.toml ----
        scase("unknown stack key", s.replace("region", "regoin"), "regoin"),
        scase(
            "wrong type: instance_type is a number",
            s.replace("\"t3.medium\"", "3"),
            "instance_type",
        ),
        scase(
            "wrong type: allowed_ssh_cidrs is a string",
            format!("allowed_ssh_cidrs = \"10.0.0.0/8\"\n{s}"),
            "allowed_ssh_cidrs",
        ),
        scase(
            "bad CIDR prefix",
            format!("allowed_ssh_cidrs = [\"10.0.0.0/33\"]\n{s}"),
            "allowed_ssh_cidrs",
        ),
        scase(
            "bad CIDR: a host name",
            format!("allowed_ssh_cidrs = [\"203.0.113.7/32\", \"example.com/32\"]\n{s}"),
            "allowed_ssh_cidrs",
        ),
        scase(
            "bad CIDR: no prefix",
            format!("allowed_ssh_cidrs = [\"203.0.113.7\"]\n{s}"),
            "allowed_ssh_cidrs",
        ),
        scase(
            "hop limit out of range",
            s.replace("metadata_hop_limit = 1", "metadata_hop_limit = 0"),
            "aws.metadata_hop_limit",
        ),
        scase(
            "not a subnet id",
            s.replace("metadata_hop_limit = 1", "subnet_id = \"vpc-0abc\""),
            "aws.subnet_id",
        ),
        scase(
            "unknown key in [aws]",
            s.replace("metadata_hop_limit = 1", "metadata_hops = 1"),
            "aws.metadata_hops",
        ),
        scase(
            "Hetzner key on an AWS stack",
            s.replace(
                "region = \"eu-central-1\"",
                "region = \"eu-central-1\"\nlocation = \"fsn1\"",
            ),
            "location",
        ),
        scase(
            "missing region",
            s.replace("region = \"eu-central-1\"\n", ""),
            "region",
        ),
        scase(
            "empty region",
            s.replace("\"eu-central-1\"", "\"\""),
            "region",
        ),
        scase(
            "unknown provider",
            s.replace("\"aws\"", "\"gcp\""),
            "provider",
        ),
        scase("empty stack file", String::new(), "provider"),
        scase("bad tailnet", s.replace("tail1.ts.net", "tail1"), "tailnet"),
        scase(
            "bad age recipient",
            s.replace("[\"@RECIPIENT@\"]", "[\"age1notakey\"]"),
            "age_recipients",
        ),
        scase(
            "plaintext secret",
            s.replace("\"env:ANTHROPIC_API_KEY\"", "\"sk-ant-plaintext\""),
            "secrets.ANTHROPIC_API_KEY",
        ),
        scase(
            "env: reference with a bad variable name",
            s.replace("\"env:ANTHROPIC_API_KEY\"", "\"env:1API\""),
            "secrets.ANTHROPIC_API_KEY",
        ),
        scase(
            "lowercase secret name",
            s.replace("ANTHROPIC_API_KEY =", "anthropic_api_key ="),
            "secrets.anthropic_api_key",
        ),
        scase(
            "secret is not a string",
            s.replace("\"env:ANTHROPIC_API_KEY\"", "42"),
            "secrets.ANTHROPIC_API_KEY",
        ),
        scase(
            "missing tailscale_auth_key",
            s.replace("tailscale_auth_key = \"env:TS_AUTHKEY\"\n", ""),
            "secrets.tailscale_auth_key",
        ),
        scase(
            "half an OAuth client",
            s.replace(
                "tailscale_auth_key = \"env:TS_AUTHKEY\"",
                "tailscale_oauth_client_id = \"env:TS_ID\"",
            ),
            "secrets",
        ),
        scase(
            "secrets for an unknown agent",
            format!("{s}\n[agent_secrets.agent-qa]\nGITHUB_TOKEN = \"env:GH\"\n"),
            "agent_secrets.agent-qa",
        ),
        scase(
            "stack-wide secret given to one agent",
            format!("{s}\n[agent_secrets.agent-pm]\ntailscale_auth_key = \"env:TS_AUTHKEY\"\n"),
            "agent_secrets.agent-pm.tailscale_auth_key",
        ),
        scase(
            "bad Tailscale tag",
            format!("{s}\n[tailscale]\ntags = [\"tag:\"]\n"),
            "tailscale.tags",
        ),
        scase(
            "TOML syntax: unterminated string",
            s.replace("\"t3.medium\"", "\"t3.medium"),
            "instance_type",
        ),
    ];
    // Files that are not UTF-8: the first bad byte is located like any other problem.
    let mut c = case(
        "stack file is not UTF-8",
        p.clone(),
        s.clone(),
        CONFIG,
        &["error: stacks/dev.toml:2:14: the file is not UTF-8 text (byte 0xff)"],
    );
    c.raw
        .push((SF, b"provider = \"aws\"\nregion = \"eu-\xff\"\n".to_vec()));
    v.push(c);
    let mut c = case(
        "project file is not UTF-8 (Latin-1)",
        p.clone(),
        s.clone(),
        CONFIG,
        &["error: agent-army.toml:6:17: the file is not UTF-8 text (byte 0xe9)"],
    );
    c.raw
        .push((PF, latin1(&p.replace("\"PM\"", "\"Produit \u{e9}\""))));
    v.push(c);
    // ---- hostile input, round 2 ----
    v.push(scase(
        "region with path characters",
        s.replace(
            "region = \"eu-central-1\"",
            "region = \"eu-central-1/../../x\"",
        ),
        "region",
    ));
    v.push(scase(
        "region that is not a region name",
        s.replace("region = \"eu-central-1\"", "region = \"Frankfurt\""),
        "region",
    ));
    v.push(pcase(
        "role with a NUL character",
        p.replace("role = \"PM\"", "role = \"P\\u0000M\""),
        "agents.role",
    ));
    // A workspace that is a link to a folder elsewhere (here holding a private key).
    let mut c = pcase(
        "workspace is a symlink out of the project",
        agent_pm("workspace = \"agents/pm\""),
        "agents.workspace",
    );
    c.expect.push("leads outside the project".into());
    c.links.push(("agents/pm", outside_folder()));
    v.push(c);
    // Inside a real workspace folder, a link to a file elsewhere.
    let mut c = pcase(
        "workspace file is a symlink out of the project",
        agent_pm("workspace = \"agents/pm\""),
        "agents.workspace",
    );
    c.files.push(("agents/pm/AGENTS.md", "# PM\n".into()));
    c.links
        .push(("agents/pm/id_ed25519", outside_folder().join("id_ed25519")));
    c.expect.push("is a symlink to".into());
    v.push(c);
    // User data over EC2's 16 KiB even gzipped: refused before the lock, the state or the
    // cloud (the lock file would show in the snapshot).
    let mut c = case(
        "user data too large for the provider",
        agent_pm("workspace = \"agents/pm\""),
        s.clone(),
        CONFIG,
        &[
            "user data for agent `agent-pm` is",
            "the aws limit is 16384",
        ],
    );
    c.files
        .push(("agents/pm/NOISE.md", incompressible(48 * 1024)));
    v.push(c);
    // The stack name is a path: a stack file outside `stacks/` is never read.
    let mut c = case(
        "stack name is a path",
        p.clone(),
        s.clone(),
        CONFIG,
        &["`../evil` is not a stack name"],
    );
    c.files.push(("evil.toml", s.clone()));
    c.stack_name = "../evil";
    v.push(c);

    // Special files: named for what they are, never read (a FIFO would block).
    for (kind, what) in [
        ("dir", "is a directory, not a stack file"),
        ("fifo", "is not a regular file (a FIFO), not a stack file"),
        ("loop", "is a symlink loop, not a stack file"),
    ] {
        let mut c = case(
            "stack file is a special file",
            p.clone(),
            s.clone(),
            CONFIG,
            &[&format!("stacks/qa.toml {what}")],
        );
        c.special.push(("stacks/qa.toml", kind));
        c.stack_name = "qa";
        v.push(c);
    }
    let mut c = pcase(
        "workspace holds a FIFO",
        agent_pm("workspace = \"agents/pm\""),
        "agents.workspace",
    );
    c.files.push(("agents/pm/AGENTS.md", "# PM\n".into()));
    c.special.push(("agents/pm/pipe", "fifo"));
    c.expect
        .push("`pipe` is not a regular file (a FIFO); only regular files are copied".into());
    v.push(c);
    let mut c = case(
        "stack name is not a DNS label",
        p.clone(),
        s.clone(),
        CONFIG,
        &["`Dev` is not a stack name: it contains 'D'"],
    );
    c.files.push(("stacks/Dev.toml", s.clone()));
    c.stack_name = "Dev";
    v.push(c);
    v.push(scase(
        "instance type with a trailing space",
        s.replace("\"t3.medium\"", "\"t3.medium \""),
        "instance_type",
    ));
    v.push(pcase(
        "agent instance type with a tab",
        agent_pm("instance_type = \"t3.\\tlarge\""),
        "agents.instance_type",
    ));

    // The selected stack does not exist.
    let mut c = case(
        "unknown stack",
        p.clone(),
        s.clone(),
        CONFIG,
        &["stacks/staging.toml", "`staging`"],
    );
    c.stack_name = "staging";
    v.push(c);

    // ---- secrets that do not resolve ----
    let mut c = secret_case("env: variable unset", s.clone(), "ANTHROPIC_API_KEY");
    c.env.push(("ANTHROPIC_API_KEY", None));
    c.expect.push("`ANTHROPIC_API_KEY` is not set".into());
    v.push(c);
    let mut c = secret_case(
        "per-agent env: variable unset",
        format!("{s}\n[agent_secrets.agent-eng]\nGITHUB_TOKEN = \"env:ENG_GITHUB_TOKEN\"\n"),
        "GITHUB_TOKEN",
    );
    c.expect.push("`ENG_GITHUB_TOKEN` is not set".into());
    v.push(c);
    let mut c = secret_case(
        "auth key env: variable unset",
        s.clone(),
        "tailscale_auth_key",
    );
    c.env.push(("TS_AUTHKEY", None));
    v.push(c);
    v.push(secret_case(
        "corrupt armor: truncated",
        with_secret("GITHUB_TOKEN", "@ENC_TRUNCATED@"),
        "GITHUB_TOKEN",
    ));
    v.push(secret_case(
        "corrupt armor: damaged header",
        with_secret("GITHUB_TOKEN", "@ENC_BAD_HEADER@"),
        "GITHUB_TOKEN",
    ));
    v.push(secret_case(
        "corrupt armor: damaged payload",
        with_secret("GITHUB_TOKEN", "@ENC_BAD_PAYLOAD@"),
        "GITHUB_TOKEN",
    ));
    v.push(secret_case(
        "armor with only BEGIN",
        with_secret("GITHUB_TOKEN", "\"-----BEGIN AGE ENCRYPTED FILE-----\""),
        "GITHUB_TOKEN",
    ));
    let mut c = secret_case(
        "wrong identity",
        s.replace("\"env:TS_AUTHKEY\"", "@ENC_OTHER@"),
        "tailscale_auth_key",
    );
    c.expect
        .push("none of the available identities can decrypt it".into());
    v.push(c);
    let mut c = secret_case(
        "identity file missing",
        with_secret("GITHUB_TOKEN", "@ENC@"),
        "GITHUB_TOKEN",
    );
    c.env.push((
        "AGENT_ARMY_IDENTITY",
        Some("/nonexistent/identity.txt".into()),
    ));
    c.expect.push("/nonexistent/identity.txt".into());
    v.push(c);
    let mut c = secret_case(
        "identity file is not an identity",
        with_secret("GITHUB_TOKEN", "@ENC@"),
        "GITHUB_TOKEN",
    );
    c.files.push((
        ".home/garbage-identity.txt",
        "AGE-SECRET-KEY-1NOTAKEY\n".into(),
    ));
    c.env.push((
        "AGENT_ARMY_IDENTITY",
        Some("@DIR@/.home/garbage-identity.txt".into()),
    ));
    v.push(c);
    v.push(secret_case(
        "passphrase-encrypted without AGENT_ARMY_PASSPHRASE",
        with_secret("GITHUB_TOKEN", "@ENC_PASSPHRASE@"),
        "GITHUB_TOKEN",
    ));
    let mut c = secret_case(
        "wrong passphrase",
        with_secret("GITHUB_TOKEN", "@ENC_PASSPHRASE@"),
        "GITHUB_TOKEN",
    );
    c.env
        .push(("AGENT_ARMY_PASSPHRASE", Some("not the passphrase".into())));
    v.push(c);
    v.push(secret_case(
        "decrypts to non-UTF-8",
        with_secret("GITHUB_TOKEN", "@ENC_BINARY@"),
        "GITHUB_TOKEN",
    ));
    // A stack without recipients has nothing to encrypt new gateway keys to.
    let mut c = secret_case(
        "no recipients and no passphrase for new gateway keys",
        s.replace("age_recipients = [\"@RECIPIENT@\"]\n", ""),
        "gateway keys",
    );
    c.expect.push("age_recipients".into());
    v.push(c);

    // ---- state files ----
    let state = STATE;
    v.push(state_case(
        "truncated state file",
        r#"{"version": 1, "project": "demo", "stack": "d"#,
        CONFIG,
        &[state, "is damaged"],
    ));
    v.push(state_case(
        "empty state file",
        "",
        CONFIG,
        &[state, "is damaged"],
    ));
    v.push(state_case(
        "state file from a newer version",
        r#"{"version": 2, "project": "demo", "stack": "dev", "new_field": {}}"#,
        CONFIG,
        &[state, "has version 2"],
    ));
    v.push(state_case(
        "state file without required fields",
        r#"{"version": 1}"#,
        CONFIG,
        &[state, "is damaged", "`project`"],
    ));
    v.push(state_case(
        "state field of the wrong type",
        r#"{"version": 1, "project": "demo", "stack": "dev", "provider": "aws", "serial": "three"}"#,
        CONFIG,
        &[state, "is damaged", "`serial`"],
    ));
    v.push(state_case(
        "state of another project",
        r#"{"version": 1, "project": "other", "stack": "dev", "provider": "aws", "serial": 1}"#,
        CONFIG,
        &[state, "belongs to other/dev"],
    ));
    v.push(state_case(
        "gateway key in state for another identity",
        &state_with_key("@ARMOR_OTHER@"),
        SECRETS,
        &[
            "secret `gateway key of agent-pm`",
            "none of the available identities",
        ],
    ));
    v.push(state_case(
        "gateway key in state is damaged",
        &state_with_key("@ARMOR_TRUNCATED@"),
        SECRETS,
        &["secret `gateway key of agent-pm`"],
    ));
    v.push(state_case(
        "gateway key in state is not a key",
        &state_with_key("@ARMOR_NOT_A_SEED@"),
        SECRETS,
        &["secret `gateway key of agent-pm`"],
    ));
    v
}

/// Armored age values for one project, and the placeholders that stand for them.
struct Armors {
    pairs: Vec<(&'static str, String)>,
}

fn encrypt_to(recipient: &str, plaintext: &[u8]) -> String {
    EncryptTo::for_stack(&[recipient.to_string()], &Env::default())
        .unwrap()
        .encrypt(plaintext)
        .unwrap()
}

/// A fresh X25519 recipient nobody in the test holds the identity of.
fn stranger() -> String {
    agent_army::secrets::generate_identity().1
}

impl Armors {
    fn new(p: &Project) -> Self {
        let good = encrypt_to(&p.public_key, TS_SENTINEL.as_bytes());
        let lines: Vec<&str> = good.lines().collect();
        // Drop the last line of the body, keep BEGIN and END.
        let mut truncated = lines.clone();
        truncated.remove(lines.len() - 2);
        let truncated = truncated.join("\n") + "\n";
        // Flip a character of the first body line (the age header).
        let bad_header = {
            let mut l = lines.clone();
            let flipped = flip(l[1]);
            l[1] = &flipped;
            l.join("\n") + "\n"
        };
        // Flip a character of the last body line (the payload).
        let bad_payload = {
            let mut l = lines.clone();
            let n = l.len() - 2;
            let flipped = flip(l[n]);
            l[n] = &flipped;
            l.join("\n") + "\n"
        };
        // scrypt takes about a second: made once for all cases.
        static PASSPHRASE: OnceLock<String> = OnceLock::new();
        let passphrase = PASSPHRASE.get_or_init(|| {
            EncryptTo::for_stack(
                &[],
                &Env::from_pairs([("AGENT_ARMY_PASSPHRASE", "correct horse")]),
            )
            .unwrap()
            .encrypt(b"value")
            .unwrap()
        });
        let other = encrypt_to(&stranger(), TS_SENTINEL.as_bytes());
        let binary = encrypt_to(&p.public_key, &[0xff, 0xfe, 0x00, 0x80]);
        let not_a_seed = encrypt_to(&p.public_key, b"not hex at all");
        let toml = |a: &str| format!("\"\"\"\n{a}\"\"\"");
        Armors {
            pairs: vec![
                ("@ENC@", toml(&good)),
                ("@ENC_TRUNCATED@", toml(&truncated)),
                ("@ENC_BAD_HEADER@", toml(&bad_header)),
                ("@ENC_BAD_PAYLOAD@", toml(&bad_payload)),
                ("@ENC_PASSPHRASE@", toml(passphrase)),
                ("@ENC_OTHER@", toml(&other)),
                ("@ENC_BINARY@", toml(&binary)),
                // JSON string contents (state files).
                ("@ARMOR_OTHER@", json_inner(&other)),
                ("@ARMOR_TRUNCATED@", json_inner(&truncated)),
                ("@ARMOR_NOT_A_SEED@", json_inner(&not_a_seed)),
            ],
        }
    }

    fn fill(&self, p: &Project, text: &str) -> String {
        let mut t = text
            .replace("@RECIPIENT@", &p.public_key)
            .replace("@DIR@", &p.path().display().to_string());
        for (k, v) in &self.pairs {
            t = t.replace(k, v);
        }
        t
    }
}

/// Latin-1 bytes of a string of Latin-1 characters.
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap())
        .collect()
}

/// A string as it appears between the quotes of a JSON string.
fn json_inner(s: &str) -> String {
    let q = serde_json::to_string(s).unwrap();
    q[1..q.len() - 1].to_string()
}

/// The same line with one base64 character changed.
fn flip(line: &str) -> String {
    let mut c: Vec<char> = line.chars().collect();
    let i = c.len() / 2;
    c[i] = if c[i] == 'A' { 'B' } else { 'A' };
    c.into_iter().collect()
}

/// With `AGENT_ARMY_FUZZ_SEEDS=DIR`, each case's two files become a seed of the fuzz target
/// (`<project>\0<stack>`, see fuzz/fuzz_targets/stack_files.rs); tests/fixtures/fuzz-corpus
/// was made so.
fn write_seed(dir: &Path, name: &str, p: &Project) {
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let mut seed = std::fs::read(p.path().join(PF)).unwrap_or_default();
    seed.push(0);
    seed.extend(std::fs::read(p.path().join(SF)).unwrap_or_default());
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(format!("malformed-{slug}")), seed).unwrap();
}

/// A folder outside any project holding a private key, made once.
fn outside_folder() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("id_ed25519"),
            "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        )
        .unwrap();
        d
    })
    .path()
    .to_path_buf()
}

/// `n` characters that gzip cannot shrink much (a seeded xorshift, as hex).
fn incompressible(n: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut s = String::with_capacity(n);
    while s.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("{x:016x}"));
    }
    s.truncate(n);
    s
}

/// Every file under `dir` with its bytes, except the HOME folder.
fn snapshot(p: &Project) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = p
        .all_files()
        .into_iter()
        .filter(|(path, _)| !path.starts_with(&p.home))
        .collect();
    v.sort();
    v
}

#[test]
fn malformed_input_fails_before_any_cloud_call() {
    let moto = Moto::start();
    let cases = cases();
    let count = cases.len();
    let mut failures = Vec::new();
    for c in &cases {
        let p = Project::empty();
        let armors = Armors::new(&p);
        p.write(PF, &armors.fill(&p, &c.project));
        p.write(SF, &armors.fill(&p, &c.stack));
        for (path, text) in &c.files {
            p.write(path, &armors.fill(&p, text));
        }
        for (path, bytes) in &c.raw {
            std::fs::write(p.path().join(path), bytes).unwrap();
        }
        for (path, kind) in &c.special {
            let at = p.path().join(path);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            match *kind {
                "dir" => std::fs::create_dir_all(&at).unwrap(),
                "loop" => std::os::unix::fs::symlink(&at, &at).unwrap(),
                "fifo" => assert!(
                    std::process::Command::new("mkfifo")
                        .arg(&at)
                        .status()
                        .unwrap()
                        .success()
                ),
                other => panic!("unknown special file {other}"),
            }
        }
        for (path, target) in &c.links {
            let at = p.path().join(path);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, at).unwrap();
        }
        if let Ok(dir) = std::env::var("AGENT_ARMY_FUZZ_SEEDS") {
            write_seed(Path::new(&dir), c.name, &p);
        }
        let before = snapshot(&p);
        let mut run = aws_env(p.run(), &moto).args(["-s", c.stack_name, "deploy", "--yes"]);
        for (k, v) in &c.env {
            run = match v {
                Some(v) => run.env(k, armors.fill(&p, v)),
                None => run.env_remove(k),
            };
        }
        let out = run.run();
        let mut problems = Vec::new();
        if out.code != c.code {
            problems.push(format!("exit {} (expected {})", out.code, c.code));
        }
        for e in &c.expect {
            if !out.stderr.contains(e.as_str()) {
                problems.push(format!("stderr lacks {e:?}"));
            }
        }
        if let Some((file, field)) = &c.diag {
            let prefix = format!("error: {file}:");
            let named = format!(": `{field}`: ");
            let hit = out
                .stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(&named));
            if !hit {
                problems.push(format!("no line `{prefix}<line>:<col>{named}...`"));
            }
        }
        if out.stderr.contains(TS_SENTINEL) || out.stdout.contains(TS_SENTINEL) {
            problems.push("the auth key's plaintext is in the output".into());
        }
        // Nothing written but the lock file.
        let after: Vec<_> = snapshot(&p)
            .into_iter()
            .filter(|(path, _)| !path.starts_with(p.path().join(".agent-army/locks")))
            .collect();
        if after != before {
            let names = |v: &[(PathBuf, Vec<u8>)]| {
                v.iter()
                    .map(|(p, _)| p.display().to_string())
                    .collect::<Vec<_>>()
            };
            problems.push(format!(
                "files changed: before {:?}, after {:?}",
                names(&before),
                names(&after)
            ));
        }
        println!(
            "[{}] exit {}: {}",
            c.name,
            out.code,
            out.stderr.lines().next().unwrap_or("")
        );
        let actions = moto.actions();
        if !actions.is_empty() {
            problems.push(format!("cloud calls were made: {actions:?}"));
            moto.reset_log();
        }
        if !problems.is_empty() {
            failures.push(format!(
                "case `{}`: {}\nstdout:\n{}\nstderr:\n{}",
                c.name,
                problems.join("; "),
                out.stdout,
                out.stderr
            ));
        }
    }
    println!("malformed input: {count} cases, {} failed", failures.len());
    assert!(count >= 30, "only {count} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));

    // Control: the same harness on a valid project does reach the cloud, so an empty
    // request log above means something.
    let p = Project::empty();
    p.write(PF, PROJECT);
    p.write(SF, &STACK.replace("@RECIPIENT@", &p.public_key));
    aws_env(p.run(), &moto)
        .args(["-s", "dev", "deploy", "--yes"])
        .run()
        .success();
    let actions = moto.actions();
    assert!(
        actions.iter().any(|a| a == "RunInstances"),
        "the control deploy made no RunInstances: {actions:?}"
    );
}

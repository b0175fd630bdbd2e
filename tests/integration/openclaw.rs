//! The real OpenClaw (the pinned npm package, on Node at the VM's version) runs every agent of
//! both example stacks from the rendered cloud-init: the config validates with no warning, the
//! gateway starts as the systemd unit starts it, answers through a `tailscale serve`-like proxy
//! with token auth, sees its model's credentials, and completes one agent turn against a local
//! OpenAI-compatible model server (the stub stands in for a self-hosted model).

use std::process::Command;

use serde_json::Value;

use crate::support::Project;
use crate::support::openclaw::{
    AgentVm, Rendered, http_status, llm_stub, node_bin, openclaw_dir, serve_proxy,
};

const STUB_KEY: &str = "stub-key-7f3a";
const REPLY: &str = "stub reply: the fleet works";

/// The example project, with the stack's model pointed at a local model server as a user with
/// a self-hosted model would: a provider under `[models.providers]`, its key a stack secret.
fn example_with_local_model(stack: &str, stub_port: u16) -> Project {
    let p = Project::example();
    let file = format!("stacks/{stack}.toml");
    let text = p.read(&file).replace(
        "[secrets]\n",
        "[secrets]\nSTUB_API_KEY = \"env:STUB_API_KEY\"\n",
    );
    let text = format!(
        "model = \"stub/echo\"\n{text}\n[models.providers.stub]\nbase_url = \"http://127.0.0.1:{stub_port}/v1\"\napi_key = \"STUB_API_KEY\"\nmodels = [\"echo\"]\n"
    );
    p.write(&file, &text);
    let mut p = p;
    p.env.insert("STUB_API_KEY".into(), STUB_KEY.into());
    p
}

fn json(out: &std::process::Output, what: &str) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find('{').unwrap_or_else(|| {
        panic!(
            "{what}: no JSON\nstdout:\n{text}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text[start..]).unwrap_or_else(|e| panic!("{what}: {e}\n{text}"))
}

fn agent_works(stack: &str, agent: &str) {
    let dir = tempfile::tempdir().unwrap();
    let stub_log = dir.path().join("stub.jsonl");
    let stub = llm_stub(REPLY, &stub_log);
    let p = example_with_local_model(stack, stub.port);
    let r = Rendered::of(&p, stack, agent);
    let env = r.file("/agent.env");
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("OPENCLAW_GATEWAY_TOKEN="))
        .expect("token in the environment file")
        .to_string();
    assert_eq!(token.len(), 48, "token is 48 hex characters");
    assert!(
        !r.file("/openclaw.json").contains(&token),
        "no token in openclaw.json"
    );
    let vm = AgentVm::install(&r);

    // 1. The config is valid, with no warning.
    let out = vm.openclaw(&r, "config validate --json");
    let v = json(&out, "config validate");
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");

    // 2. The gateway, started as the unit starts it.
    let (_gateway, ready_after) = vm.start_gateway(&r);
    eprintln!(
        "{stack}/{agent}: gateway ready after {:.1} s",
        ready_after.as_secs_f64()
    );

    // 3. Through the serve-like proxy: the token is required and sufficient.
    let host = format!("{stack}-{agent}.tail12345.ts.net");
    let proxy = serve_proxy(vm.port, &host);
    let bearer = format!("Bearer {token}");
    let probe = "/control-ui-config.json";
    let ok = http_status(
        proxy.port,
        "GET",
        probe,
        &[("Authorization", &bearer)],
        None,
    )
    .unwrap();
    let none = http_status(proxy.port, "GET", probe, &[], None).unwrap();
    let wrong = http_status(
        proxy.port,
        "GET",
        probe,
        &[("Authorization", "Bearer 0000")],
        None,
    )
    .unwrap();
    eprintln!(
        "{stack}/{agent}: through the proxy: token {} / none {} / wrong {}",
        ok.0, none.0, wrong.0
    );
    assert_eq!(ok.0, 200, "{}\n{}", ok.1, vm.log());
    assert_eq!(none.0, 401, "{}", none.1);
    assert_eq!(wrong.0, 401, "{}", wrong.1);

    // 4. The configured model, with its credentials found.
    let out = vm.openclaw(&r, "models status --json");
    let v = json(&out, "models status");
    assert_eq!(v["defaultModel"], "stub/echo", "{v}");
    assert_eq!(
        v["auth"]["missingProvidersInUse"],
        serde_json::json!([]),
        "{v}"
    );
    let providers = v["auth"]["providers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let stub_auth = providers
        .iter()
        .find(|p| p["provider"] == "stub")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(stub_auth["effective"]["kind"], "env", "{v}");

    // 5. One full agent turn through the gateway, answered by the model server.
    let body = serde_json::json!({
        "model": "openclaw/default",
        "messages": [{"role": "user", "content": format!("hello from the {agent} test")}],
    })
    .to_string();
    let (status, answer) = http_status(
        proxy.port,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &bearer)],
        Some(&body),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}\n{}", vm.log());
    let answer: Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert_eq!(
        answer["choices"][0]["message"]["content"], REPLY,
        "{answer}"
    );
    let log = std::fs::read_to_string(&stub_log).unwrap_or_default();
    let turn = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["path"] == "/v1/chat/completions")
        .unwrap_or_else(|| panic!("the model server saw no completion request:\n{log}"));
    assert_eq!(turn["authorization"], format!("Bearer {STUB_KEY}"));
    assert_eq!(turn["body"]["model"], "echo");
    assert!(
        turn["body"]
            .to_string()
            .contains(&format!("hello from the {agent} test"))
    );
    // The role reached the model through a workspace file OpenClaw loads.
    assert!(
        turn["body"].to_string().contains("IDENTITY.md"),
        "identity file not in the prompt"
    );
}

#[test]
fn dev_agent_pm_works() {
    agent_works("dev", "agent-pm");
}
#[test]
fn dev_agent_eng_works() {
    agent_works("dev", "agent-eng");
}
#[test]
fn dev_agent_tester_works() {
    agent_works("dev", "agent-tester");
}
#[test]
fn prod_agent_pm_works() {
    agent_works("prod", "agent-pm");
}
#[test]
fn prod_agent_eng_works() {
    agent_works("prod", "agent-eng");
}
#[test]
fn prod_agent_tester_works() {
    agent_works("prod", "agent-tester");
}

/// The Node release the VM installs satisfies the installed openclaw's `engines.node`, checked
/// with npm's own semver, and is the release this suite runs the gateway on.
#[test]
fn rendered_node_satisfies_openclaw_engines() {
    let p = Project::example();
    let r = Rendered::of(&p, "dev", "agent-pm");
    let step = r.file("/steps/5-openclaw.sh");
    let version = step
        .lines()
        .find_map(|l| l.strip_prefix("NODE_VERSION="))
        .expect("NODE_VERSION in the install step")
        .trim_matches('\'')
        .to_string();
    let node = node_bin().join("node");
    let script = "const v = process.argv[1]; const e = JSON.parse(require('fs').readFileSync('openclaw/package.json', 'utf8')).engines.node; \
                  const ok = require('semver').satisfies(v, e); console.log(JSON.stringify({e, ok})); process.exit(ok ? 0 : 1)";
    let out = Command::new(&node)
        .current_dir(openclaw_dir().join("node_modules"))
        .args(["-e", script, &version])
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "Node {version} does not satisfy openclaw's engines: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ran = Command::new(&node).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ran.stdout).trim(),
        format!("v{version}")
    );
    // And the pinned openclaw is what the install step installs (the staged version file,
    // which the helper installs at boot and on updates).
    let pkg: Value = serde_json::from_str(
        &std::fs::read_to_string(openclaw_dir().join("node_modules/openclaw/package.json"))
            .unwrap(),
    )
    .unwrap();
    assert!(
        step.contains("agent-army-agent packages /run/agent-army/stage"),
        "{step}"
    );
    let pinned = r.file("/run/agent-army/stage/openclaw-version").trim();
    assert_eq!(pinned, pkg["version"].as_str().unwrap());
}

//! The Docker target against a real engine: Debian's `docker.io`, started by
//! `scripts/docker-setup` (which `scripts/test` runs), with images built locally and a
//! STAND-IN for Tailscale's image (no registry, no tailnet here: see the script).
//!
//! One test, in phases, because each deploy starts three real OpenClaw gateways:
//! 1. the example stack `local` (no auth key: gateways on 127.0.0.1): 200 with the token,
//!    401 without or with a wrong one; non-root, no capability; a redeploy changes nothing;
//!    a changed env value recreates only that agent's container and keeps its data volume;
//!    `destroy` leaves no container or network and keeps the volumes;
//! 2. the same agents with an auth key: a sidecar per agent owns the network; the gateway
//!    answers through the stand-in's serve; the auth key is in neither the OpenClaw
//!    container's environment nor its file system; `destroy --purge` removes everything.
//!
//! Both phases also run `open` (the published URL) and `pair` (the openclaw CLI in the
//! OpenClaw container, with the gateway's environment: no request is pending on a fresh
//! gateway). `render` and `validate` need no engine and have a test of their own.

use std::collections::BTreeMap;
use std::process::Command;

use crate::support::{API_SENTINEL, Project, TS_SENTINEL, repo};

/// `.tools/docker/env`, as `scripts/docker-setup` wrote it; `None` (after a loud message)
/// when it says Docker cannot run here.
fn docker_env() -> Option<BTreeMap<String, String>> {
    let path = repo().join(".tools/docker/env");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run the suite through scripts/test, which runs scripts/docker-setup",
            path.display()
        )
    });
    let env: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(why) = env.get("AGENT_ARMY_DOCKER_UNAVAILABLE") {
        eprintln!(
            "\n!!!!!!!! SKIPPED: the Docker target's tests: scripts/docker-setup says Docker cannot run here: {why} !!!!!!!!\n"
        );
        return None;
    }
    Some(env)
}

struct Docker {
    host: String,
}

impl Docker {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let o = Command::new("docker")
            .env("DOCKER_HOST", &self.host)
            .args(args)
            .output()
            .expect("the docker client (docker.io)");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "docker {args:?}: {err}");
        out
    }
    fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }
    fn ids(&self, label: &str, kind: &[&str]) -> Vec<String> {
        let mut args = kind.to_vec();
        args.extend(["-q", "--filter", label]);
        let mut v: Vec<String> = self.ok(&args).lines().map(str::to_string).collect();
        v.sort();
        v
    }
}

/// `GET path` on 127.0.0.1:port with an optional bearer token: the status code.
fn status(port: u16, path: &str, token: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {buf:?}"))
}

/// Each agent's URL from `outputs --show-secrets`: (agent, url).
fn urls(p: &Project, host: &str, stack: &str) -> Vec<(String, String)> {
    let out = p
        .run()
        .env("DOCKER_HOST", host)
        .args(["-s", stack, "-o", "json", "outputs", "--show-secrets"])
        .run();
    out.success();
    out.json()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent"].as_str().unwrap().to_string(),
                a["url"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// One agent of a `status -o json` document.
fn agent_in<'a>(doc: &'a serde_json::Value, agent: &str) -> &'a serde_json::Value {
    doc["agents"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["agent"] == agent))
        .unwrap_or_else(|| panic!("no {agent} in {doc}"))
}

fn split_url(url: &str) -> (String, String) {
    let (base, token) = url.split_once("/#token=").expect("url with a token");
    (base.to_string(), token.to_string())
}

/// `render` and `validate` on a Docker stack need no engine: render writes the containers'
/// create bodies (never cloud-init), masked unless `--show-secrets`; validate says what it
/// checked.
#[test]
fn docker_stack_renders_create_bodies_and_validates_without_an_engine() {
    let p = Project::example();
    let local = std::fs::read_to_string(repo().join("stacks/local.toml"))
        .unwrap()
        .replace(
            "age16jcxy2zfs8745hxn2gslqdat6vr87886ruq4k9hpffz5vg8fqswqfpepg0",
            &p.public_key,
        );
    p.write("stacks/local.toml", &local);
    // No engine answers here: nothing below may need one.
    let run = |args: &[&str]| {
        p.run()
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(args)
            .run()
    };
    run(&["-s", "local", "validate"])
        .success()
        .stdout_has("agent-pm: containers")
        .stdout_has("every agent's containers build (create bodies and the files copied in)");
    run(&["-s", "local", "render", "--out", "out"]).success();
    let stack = p.read("out/_stack.yaml");
    assert!(stack.contains("Driver: bridge"), "{stack}");
    let pm = p.read("out/agent-pm.yaml");
    for want in [
        "Image: ",
        "HostConfig:",
        "CapDrop:",
        "/etc/openclaw-agent/agent.env",
        "********",
    ] {
        assert!(pm.contains(want), "{want} not in {pm}");
    }
    assert!(!pm.contains("#cloud-config"), "{pm}");
    assert!(!pm.contains(API_SENTINEL), "a secret in a masked render");
    // With --show-secrets: the real values, as deploy copies them in.
    run(&["-s", "local", "render", "--out", "shown", "--show-secrets"]).success();
    let shown = p.read("shown/agent-pm.yaml");
    assert!(shown.contains(API_SENTINEL), "{shown}");
    // With an auth key: a sidecar per agent, the key only in its file.
    p.write(
        "stacks/local.toml",
        &local
            .replace("# tailnet = ", "tailnet = ")
            .replace("# tailscale_auth_key", "tailscale_auth_key"),
    );
    run(&["-s", "local", "render", "--out", "ts"]).success();
    let ts = p.read("ts/agent-pm.yaml");
    assert!(
        ts.contains("NetworkMode: container:acme-agents-local-agent-pm-tailscale"),
        "{ts}"
    );
    assert!(!ts.contains(TS_SENTINEL));
    run(&[
        "-s",
        "local",
        "render",
        "--out",
        "ts-shown",
        "--show-secrets",
    ])
    .success();
    assert!(p.read("ts-shown/agent-pm.yaml").contains(TS_SENTINEL));
    // Without a key, `render --show-secrets` shows what deploy makes: no sidecar.
    p.write("stacks/local.toml", &local);
    run(&[
        "-s",
        "local",
        "render",
        "--out",
        "plain-shown",
        "--show-secrets",
    ])
    .success();
    let plain = p.read("plain-shown/agent-pm.yaml");
    assert!(!plain.contains("-tailscale"), "{plain}");
    // An auth key needs the tailnet's name; an OAuth client alone is refused.
    p.write(
        "stacks/local.toml",
        &local.replace("# tailscale_auth_key", "tailscale_auth_key"),
    );
    run(&["-s", "local", "validate"])
        .code(3)
        .stderr_has("missing key `tailnet`: this Docker stack has `tailscale_auth_key`");
    p.write(
        "stacks/local.toml",
        &local.replace(
            "# tailscale_auth_key = \"env:TS_AUTHKEY\"",
            "tailscale_oauth_client_id = \"env:TS_AUTHKEY\"\ntailscale_oauth_client_secret = \"env:TS_AUTHKEY\"",
        ),
    );
    run(&["-s", "local", "validate"])
        .code(3)
        .stderr_has("an OAuth client without `tailscale_auth_key`");
}

#[test]
fn docker_target_end_to_end() {
    let Some(env) = docker_env() else { return };
    let host = env["DOCKER_HOST"].clone();
    let d = Docker { host: host.clone() };
    let p = Project::example();
    // A project name of its own: the engine may hold other runs' containers.
    let project = format!("aa-docker-test-{}", std::process::id());
    let manifest = p
        .read("agent-army.toml")
        .replace("name = \"acme-agents\"", &format!("name = \"{project}\""));
    p.write("agent-army.toml", &manifest);
    let local = std::fs::read_to_string(repo().join("stacks/local.toml"))
        .unwrap()
        .replace(
            "age16jcxy2zfs8745hxn2gslqdat6vr87886ruq4k9hpffz5vg8fqswqfpepg0",
            &p.public_key,
        )
        .replace(
            "# openclaw_image = \"agent-army-local/openclaw:2026.9.6\"",
            &format!(
                "openclaw_image = \"{}\"",
                env["AGENT_ARMY_TEST_OPENCLAW_IMAGE"]
            ),
        );
    p.write("stacks/local.toml", &local);
    let run = |args: &[&str]| p.run().env("DOCKER_HOST", &host).args(args).run();
    let label = format!("label=agent-army/project={project}");

    // --- 1. no tailnet: gateways on 127.0.0.1 --------------------------------------------
    // A volume with a name the stack wants but not its labels (made by hand here): plan and
    // deploy refuse before changing anything, and leave it alone.
    let foreign = format!("{project}-local-agent-pm-data");
    d.ok(&["volume", "create", &foreign]);
    for args in [
        &["-s", "local", "plan"][..],
        &["-s", "local", "deploy", "--yes"],
    ] {
        run(args)
            .code(1)
            .stderr_has(&format!(
                "a volume named {foreign} is on this engine, but this stack did not make it (it has no agent-army labels)"
            ))
            .stderr_has(&format!("docker volume rm {foreign}"));
    }
    assert!(d.ids(&label, &["ps", "-a"]).is_empty());
    assert!(d.ids(&label, &["network", "ls"]).is_empty());
    d.ok(&["volume", "rm", &foreign]);
    let t = std::time::Instant::now();
    let out = run(&["-s", "local", "deploy", "--yes"]);
    out.success();
    eprintln!(
        "deploy of 3 agents to healthy gateways: {:.1} s\n{}",
        t.elapsed().as_secs_f64(),
        out.stdout
    );
    let agents = urls(&p, &host, "local");
    assert_eq!(agents.len(), 3);
    for (agent, url) in &agents {
        let (base, token) = split_url(url);
        let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
        assert!(base.starts_with("http://127.0.0.1:"), "{base}");
        assert_eq!(
            status(port, "/control-ui-config.json", Some(&token)),
            200,
            "{agent}"
        );
        assert_eq!(
            status(port, "/control-ui-config.json", None),
            401,
            "{agent}"
        );
        assert_eq!(
            status(port, "/control-ui-config.json", Some("wrong-token")),
            401,
            "{agent}"
        );
        let name = format!("{project}-local-{agent}");
        let c = d.inspect(&name);
        assert_eq!(c["Config"]["User"], "10001:10001", "{agent}");
        assert_eq!(c["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
        assert_eq!(c["HostConfig"]["Privileged"], false);
        assert!(
            c["HostConfig"]["SecurityOpt"]
                .to_string()
                .contains("no-new-privileges")
        );
        // Published on loopback only.
        let bindings = c["HostConfig"]["PortBindings"].to_string();
        assert!(bindings.contains("\"HostIp\":\"127.0.0.1\""), "{bindings}");
        let caps = d.ok(&[
            "exec",
            &name,
            "sh",
            "-c",
            "id -u; grep -E '^Cap(Eff|Prm|Bnd)' /proc/1/status",
        ]);
        assert!(caps.starts_with("10001\n"), "{caps}");
        for l in caps.lines().skip(1) {
            assert!(
                l.ends_with("0000000000000000"),
                "{agent} has capabilities: {l}"
            );
        }
        for role in ["project", "stack", "agent"] {
            assert!(c["Config"]["Labels"][format!("agent-army/{role}")].is_string());
        }
    }
    // `open`: the published URL, the token masked unless asked; `pair`: the openclaw CLI
    // run in the OpenClaw container with the gateway's environment (it reaches the gateway
    // with the token: a fresh gateway has no pending request).
    let (pm, pm_url) = agents.iter().find(|(a, _)| a == "agent-pm").unwrap();
    let (base, _) = split_url(pm_url);
    run(&["-s", "local", "open", "pm"])
        .success()
        .stdout_has(&format!("{base}/#token=********"));
    run(&["-s", "local", "open", "pm", "--show-secrets"])
        .success()
        .stdout_has(pm_url);
    run(&["-s", "local", "pair", "pm"])
        .success()
        .stdout_has(&format!("No pairing request is pending on {pm}"));
    run(&["-s", "local", "-o", "json", "pair", "pm"])
        .success()
        .stdout_has("\"pending\":[]");
    run(&["-s", "local", "pair", "pm", "--yes"])
        .code(3)
        .stderr_has("no pending request");
    // A browser at the published URL: the gateway allows exactly that origin (through
    // Docker's port publishing it does not see loopback, and refused the Control UI before
    // `allowedOrigins`); it connects from the bridge's private address, so the gateway pairs
    // it by itself and nothing is left for `pair`.
    let (_, pm_token) = split_url(pm_url);
    let node = crate::support::openclaw::node_bin().join("node");
    let out = Command::new(node)
        .arg(repo().join("tests/support/pair_client.mjs"))
        .arg(base.replace("http://", "ws://"))
        .arg(&pm_token)
        .args(["--wait", "60"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("\"event\":\"paired\""),
        "browser: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(&["-s", "local", "pair", "pm"])
        .success()
        .stdout_has("No pairing request is pending on agent-pm");
    // A redeploy changes nothing.
    let out = run(&["-s", "local", "deploy", "--yes"]);
    out.success().stdout_has("No changes.");
    // `status`: the same report as on VMs; no tailnet is asked about; each gateway is asked
    // an authenticated question where it is published.
    let out = run(&["-s", "local", "-o", "json", "status"]);
    out.success();
    let doc = out.json();
    assert_eq!(doc["provider"], "docker", "{doc}");
    for a in doc["agents"].as_array().unwrap() {
        assert_eq!(a["cloud"], "running", "{a}");
        assert_eq!(a["healthy"], true, "{a}");
        assert_eq!(a["gateway"]["status"], 200, "{a}");
        assert_eq!(a["gateway"]["authenticated"], true, "{a}");
        let url = a["gateway"]["url"].as_str().unwrap();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        assert_eq!(a["problems"], serde_json::json!([]), "{a}");
    }
    run(&["-s", "local", "status"])
        .success()
        .stdout_has("No tailnet: each gateway is published on 127.0.0.1")
        .stdout_has("not used")
        .stdout_has("All 3 agents are healthy.");
    // `logs`: the gateway's output; JSON lines with their time; the `docker logs` command.
    let out = run(&["-s", "local", "logs", "pm", "-n", "20"]);
    out.success();
    assert!(out.stdout.contains("[gateway]"), "{}", out.stdout);
    let out = run(&[
        "-s", "local", "-o", "json", "logs", "pm", "-n", "5", "--since", "1h",
    ]);
    out.success();
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 5, "{}", out.stdout);
    for l in &lines {
        assert!(l["time"].as_str().unwrap().starts_with("20"), "{l}");
        assert!(l["message"].is_string(), "{l}");
    }
    run(&[
        "-s", "local", "logs", "pm", "--print", "-f", "--since", "30m",
    ])
    .success()
    .stdout_has(&format!(
        "docker -H {host} logs --tail=100 --follow --since=1800s {project}-local-agent-pm"
    ));
    run(&["-s", "local", "logs", "pm", "--tailscale"])
        .code(1)
        .stderr_has(&format!("no container {project}-local-agent-pm-tailscale"))
        .stderr_has("the agent has no Tailscale sidecar");
    // A stopped gateway: unhealthy, with where to look (the env change below recreates it).
    let eng = format!("{project}-local-agent-eng");
    d.ok(&["stop", "-t", "5", &eng]);
    let out = run(&["-s", "local", "-o", "json", "status"]);
    out.code(1);
    let doc = out.json();
    let a = agent_in(&doc, "agent-eng");
    assert_eq!(a["cloud"], "exited", "{a}");
    assert_eq!(a["healthy"], false, "{a}");
    assert!(
        a["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("its OpenClaw container {eng} is exited")),
        "{a}"
    );
    assert!(
        a["problems"][0]["help"]
            .as_str()
            .unwrap()
            .contains("agent-army logs agent-eng"),
        "{a}"
    );
    assert_eq!(doc["unhealthy"], 1, "{doc}");
    d.ok(&["start", &eng]);
    // A changed env value: only agent-eng is recreated, on the same data volume.
    d.ok(&["exec", &eng, "sh", "-c", "echo kept > \"$HOME/marker\""]);
    let before: Vec<String> = agents
        .iter()
        .map(|(a, _)| d.inspect(&format!("{project}-local-{a}"))["Id"].to_string())
        .collect();
    p.write(
        "agent-army.toml",
        &manifest.replace(
            "GIT_AUTHOR_NAME = \"agent-eng\"",
            "GIT_AUTHOR_NAME = \"agent-eng-2\"",
        ),
    );
    let out = run(&["-s", "local", "plan"]);
    out.success()
        .stderr_has("~ agent-eng (openclaw: recreate (env changed))")
        .stderr_has("  agent-pm (openclaw: no change)");
    run(&["-s", "local", "deploy", "--yes"]).success();
    for ((a, _), id) in agents.iter().zip(&before) {
        let now = d.inspect(&format!("{project}-local-{a}"))["Id"].to_string();
        assert_eq!(
            now != *id,
            a == "agent-eng",
            "{a}: recreated only when its env changed"
        );
    }
    assert_eq!(
        d.ok(&["exec", &eng, "sh", "-c", "cat \"$HOME/marker\""]),
        "kept\n"
    );
    let env_file = d.ok(&["exec", &eng, "cat", "/etc/openclaw-agent/agent.env"]);
    assert!(
        env_file.contains("GIT_AUTHOR_NAME=agent-eng-2"),
        "{env_file}"
    );
    // The URL (port) survived the recreation.
    assert_eq!(urls(&p, &host, "local"), agents);
    // destroy: no container, no network; the volumes stay.
    run(&["-s", "local", "destroy", "--yes"]).success();
    assert!(d.ids(&label, &["ps", "-a"]).is_empty());
    assert!(d.ids(&label, &["network", "ls"]).is_empty());
    assert_eq!(
        d.ok(&["volume", "ls", "-q", "--filter", &label])
            .lines()
            .count(),
        3
    );

    // --- 2. with a tailnet: a sidecar per agent -------------------------------------------
    let ts = local
        .replace(
            "# tailnet = \"tail12345.ts.net\"",
            "tailnet = \"tail12345.ts.net\"",
        )
        .replace(
            "# tailscale_auth_key = \"env:TS_AUTHKEY\"",
            "tailscale_auth_key = \"env:TS_AUTHKEY\"",
        )
        .replace(
            "# tailscale_image = \"ghcr.io/tailscale/tailscale:v1.82.5\"",
            &format!(
                "tailscale_image = \"{}\"",
                env["AGENT_ARMY_TEST_TAILSCALE_IMAGE"]
            ),
        );
    p.write("stacks/tailnet.toml", &ts);
    run(&["-s", "tailnet", "deploy", "--yes"]).success();
    let agents = urls(&p, &host, "tailnet");
    for (agent, url) in &agents {
        let (base, token) = split_url(url);
        assert_eq!(base, format!("https://tailnet-{agent}.tail12345.ts.net"));
        let oc = format!("{project}-tailnet-{agent}");
        let sc = format!("{oc}-tailscale");
        let c = d.inspect(&oc);
        let sidecar_id = d.inspect(&sc)["Id"].as_str().unwrap().to_string();
        assert_eq!(
            c["HostConfig"]["NetworkMode"],
            format!("container:{sidecar_id}")
        );
        assert_eq!(
            d.inspect(&sc)["Config"]["Hostname"],
            format!("tailnet-{agent}")
        );
        // Through the stand-in's serve, as a tailnet peer would.
        let fetch = |t: &str| {
            let js = format!(
                "fetch('http://127.0.0.1:443/control-ui-config.json', {{headers: {{authorization: 'Bearer {t}'}}}}).then(r => console.log(r.status))"
            );
            d.ok(&["exec", &sc, "node", "-e", &js]).trim().to_string()
        };
        assert_eq!(fetch(&token), "200", "{agent}");
        assert_eq!(fetch("wrong-token"), "401", "{agent}");
        // The auth key: not in the OpenClaw container's environment or files.
        assert!(!c["Config"]["Env"].to_string().contains(TS_SENTINEL));
        let envs = d.ok(&[
            "exec",
            &oc,
            "sh",
            "-c",
            "cat /proc/1/environ | tr '\\0' '\\n'; env",
        ]);
        assert!(
            !envs.contains(TS_SENTINEL),
            "{agent}: the auth key in the environment"
        );
        let (code, found, _) = d.run(&[
            "exec", &oc, "sh", "-c",
            &format!("grep -rls '{TS_SENTINEL}' /etc /var /tmp /run /root /home /usr/local/share 2>/dev/null"),
        ]);
        assert!(
            code != 0 && found.is_empty(),
            "{agent}: the auth key is readable at {found}"
        );
        let (code, _, _) = d.run(&["exec", &oc, "ls", "/var/lib/tailscale"]);
        assert_ne!(
            code, 0,
            "the sidecar's state is not mounted in the OpenClaw container"
        );
        let mounts = c["Mounts"].to_string();
        assert!(!mounts.contains("tailscale-state"), "{mounts}");
        // The sidecar has it, on its own volume.
        assert_eq!(
            d.ok(&["exec", &sc, "cat", "/var/lib/tailscale/authkey"]),
            TS_SENTINEL
        );
        let caps = d.ok(&["exec", &oc, "grep", "CapEff", "/proc/1/status"]);
        assert!(caps.trim().ends_with("0000000000000000"), "{caps}");
    }
    // `open` gives the tailnet name; `pair` reaches the gateway on the sidecar's loopback.
    run(&["-s", "tailnet", "open", "pm"])
        .success()
        .stdout_has("https://tailnet-agent-pm.tail12345.ts.net/#token=********");
    run(&["-s", "tailnet", "-o", "json", "pair", "pm"])
        .success()
        .stdout_has("\"pending\":[]");
    // `status`: each sidecar's own `tailscale status --json` (by exec); the gateways are
    // probed over the tailnet, which this machine is not on: unhealthy, and said so.
    let out = run(&["-s", "tailnet", "-o", "json", "status", "--netcheck"]);
    out.code(1);
    for a in out.json()["agents"].as_array().unwrap() {
        let agent = a["agent"].as_str().unwrap();
        assert_eq!(a["cloud"], "running", "{a}");
        assert_eq!(a["sidecar"]["backend_state"], "Running", "{a}");
        assert!(
            a["sidecar"]["ips"][0].as_str().unwrap().starts_with("100."),
            "{a}"
        );
        assert!(
            a["sidecar"]["health"][0]
                .as_str()
                .unwrap()
                .contains("STAND-IN"),
            "{a}"
        );
        assert_eq!(
            a["gateway"]["url"],
            format!("https://tailnet-{agent}.tail12345.ts.net/control-ui-config.json"),
            "{a}"
        );
        assert_eq!(a["gateway"]["answers"], false, "{a}");
        // The stand-in has no netcheck, and says so: what the command said is reported.
        assert!(
            a["netcheck"]["error"]
                .as_str()
                .unwrap()
                .contains("not implemented by the stand-in"),
            "{a}"
        );
    }
    // The sidecar's log.
    run(&["-s", "tailnet", "logs", "pm", "--tailscale"])
        .success()
        .stdout_has("STAND-IN for tailscale/containerboot");
    // `--replace pm`: both of pm's containers made again, on the same volumes: the sidecar
    // keeps its node identity (its addresses), the others are untouched.
    let ips = |agent: &str| {
        let out = run(&["-s", "tailnet", "-o", "json", "status"]);
        agent_in(&out.json(), agent)["sidecar"]["ips"].clone()
    };
    let pm_ips = ips("agent-pm");
    // A sidecar restarted under its gateway (as Docker's restart policy does after a crash):
    // the gateway is left in the old network namespace. `status` says so and `plan` makes
    // the gateway again.
    d.ok(&[
        "restart",
        "-t",
        "2",
        &format!("{project}-tailnet-agent-pm-tailscale"),
    ]);
    let out = run(&["-s", "tailnet", "-o", "json", "status"]);
    out.code(1);
    let doc = out.json();
    let pm = agent_in(&doc, "agent-pm");
    assert!(
        pm["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("its Tailscale sidecar restarted after the gateway"),
        "{pm}"
    );
    run(&["-s", "tailnet", "plan"]).success().stderr_has(
        "~ agent-pm (openclaw: recreate (its sidecar restarted after it); tailscale: no change)",
    );
    run(&[
        "-s",
        "tailnet",
        "plan",
        "--replace",
        "pm",
        "--detailed-exitcode",
    ])
    .code(2)
    .stderr_has("~ agent-pm (openclaw: recreate (--replace); tailscale: recreate (--replace))")
    .stderr_has("  agent-eng (openclaw: no change; tailscale: no change)");
    let eng_id = d.inspect(&format!("{project}-tailnet-agent-eng"))["Id"].clone();
    run(&["-s", "tailnet", "deploy", "--yes", "--replace", "agent-pm"]).success();
    assert_eq!(ips("agent-pm"), pm_ips);
    assert_eq!(
        d.inspect(&format!("{project}-tailnet-agent-eng"))["Id"],
        eng_id
    );
    run(&["-s", "tailnet", "logs", "pm", "--tailscale"])
        .success()
        .stdout_has("node state found: keeping identity");
    run(&["-s", "tailnet", "deploy", "--yes"])
        .success()
        .stdout_has("No changes.");
    run(&["-s", "tailnet", "destroy", "--yes", "--purge"]).success();
    run(&["-s", "local", "destroy", "--yes", "--purge"]).success();
    assert!(d.ids(&label, &["ps", "-a"]).is_empty());
    assert!(d.ids(&label, &["network", "ls"]).is_empty());
    assert_eq!(d.ok(&["volume", "ls", "-q", "--filter", &label]), "");
}

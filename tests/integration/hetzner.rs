//! Hetzner lifecycle against the fake API behind Prism (see tests/support/hetzner_fake.py).
//! Every request agent-army makes goes through Prism, which rejects requests that break the
//! Hetzner OpenAPI spec; the tests read the fake's state and request log directly.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::hetzner::{Hetzner, counts, http_raw};
use crate::support::{Project, state_json};

const STACK_LABEL: &str = "agent-army/stack";

fn deploy(h: &Hetzner, p: &Project) -> crate::support::Out {
    h.env(p.run()).args(["-s", "dev", "deploy", "--yes"]).run()
}

/// Live servers of the dev stack, by agent label.
fn servers_by_agent(state: &Value) -> BTreeMap<String, Value> {
    state["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["labels"][STACK_LABEL] == "dev")
        .map(|s| {
            (
                s["labels"]["agent-army/agent"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                s.clone(),
            )
        })
        .collect()
}

fn labelled<'a>(state: &'a Value, kind: &str) -> Vec<&'a Value> {
    state[kind]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["labels"][STACK_LABEL] == "dev")
        .collect()
}

fn mutating(reqs: &[Value]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r["method"] != "GET")
        .map(crate::support::hetzner::pattern)
        .collect()
}

#[track_caller]
fn assert_no_api_errors(reqs: &[Value]) {
    let bad: Vec<String> = reqs
        .iter()
        .filter(|r| r["status"].as_u64().unwrap_or(0) >= 400)
        .map(|r| format!("{} -> {}", crate::support::hetzner::pattern(r), r["status"]))
        .collect();
    assert!(bad.is_empty(), "API errors: {bad:?}");
}

#[test]
fn hetzner_lifecycle_deploy_redeploy_change_destroy() {
    let h = Hetzner::start();
    let p = Project::example();

    // 1. Deploy the three example agents.
    let out = deploy(&h, &p);
    out.success().stdout_has("dev-agent-pm.tail12345.ts.net");
    assert_no_api_errors(&h.requests());

    let st = h.state();
    let servers = servers_by_agent(&st);
    assert_eq!(
        servers.keys().map(String::as_str).collect::<Vec<_>>(),
        ["agent-eng", "agent-pm", "agent-tester"]
    );
    let fws = labelled(&st, "firewalls");
    assert_eq!(fws.len(), 1, "one firewall: {fws:?}");
    let fw = fws[0];
    assert_eq!(fw["name"], "agent-army-acme-agents-dev");
    assert_eq!(fw["rules"], json!([]), "no inbound rules at all");
    assert_eq!(fw["labels"]["agent-army/project"], "acme-agents");
    assert_eq!(fw["labels"]["agent-army/role"], "firewall");
    let keys = labelled(&st, "ssh_keys");
    assert_eq!(keys.len(), 1, "one break-glass key: {keys:?}");
    let key = keys[0];
    assert_eq!(key["labels"]["agent-army/role"], "break-glass-ssh-key");
    assert!(
        key["public_key"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );
    let key_id = key["id"].to_string();

    let applied: Vec<u64> = fw["applied_to"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["server"]["id"].as_u64().unwrap())
        .collect();
    let local = state_json(&p, "dev").unwrap();
    for (agent, s) in &servers {
        let id = s["id"].as_u64().unwrap();
        assert_eq!(s["name"], format!("dev-{agent}"));
        assert_eq!(s["status"], "running");
        assert_eq!(s["server_type"]["name"], "cx22");
        assert_eq!(s["location"]["name"], "fsn1");
        assert_eq!(s["image"]["name"], "ubuntu-24.04");
        let l = &s["labels"];
        assert_eq!(l["agent-army/project"], "acme-agents");
        assert_eq!(l["agent-army/role"], "agent");
        assert_eq!(
            crate::faults::machine(l["agent-army/fingerprint"].as_str().unwrap()),
            local["agents"][agent]["fingerprint"]
        );
        assert!(applied.contains(&id), "firewall not applied to {agent}");
        assert_eq!(
            s["public_net"]["firewalls"],
            json!([{"id": fw["id"], "status": "applied"}])
        );
        let inputs = &st["server_inputs"][id.to_string()];
        let ud = inputs["user_data"].as_str().unwrap();
        assert!(ud.starts_with("#cloud-config\n"), "{agent}: {ud:.80}");
        assert!(
            ud.contains(&format!("--hostname=dev-{agent}")),
            "{agent} user data lacks its hostname"
        );
        assert_eq!(inputs["ssh_keys"], json!([key_id]));
        assert_eq!(
            inputs["root_password"],
            Value::Null,
            "no root password mail"
        );
        assert_eq!(
            inputs["public_net"],
            json!({"enable_ipv4": true, "enable_ipv6": true})
        );
        assert_eq!(local["agents"][agent]["server_id"], id.to_string());
    }
    assert_eq!(local["network"]["id"], fw["id"].to_string());
    assert_eq!(local["network"]["ssh_key_id"], key_id);
    p.assert_nowhere_on_disk(crate::support::TS_SENTINEL);
    p.assert_nowhere_on_disk(crate::support::API_SENTINEL);

    // 2. Unchanged redeploy: reads only.
    h.reset_log();
    deploy(&h, &p).success().stdout_has("No changes");
    let reqs = h.requests();
    assert!(
        mutating(&reqs).is_empty(),
        "unchanged redeploy changed something: {:?}",
        counts(&reqs)
    );
    println!("unchanged redeploy: {:?}", counts(&reqs));

    // 3. Change one agent's server type: only that one is replaced.
    p.write(
        "agent-army.toml",
        &p.read("agent-army.toml").replace(
            "name = \"agent-tester\"\n",
            "name = \"agent-tester\"\ninstance_type = \"cx32\"\n",
        ),
    );
    let plan = h
        .env(p.run())
        .args(["-s", "dev", "plan", "--detailed-exitcode"])
        .run();
    plan.code(2)
        .stdout_has("-/+ agent-tester")
        .stdout_has("instance type cx22 → cx32");
    h.reset_log();
    deploy(&h, &p).success();
    let reqs = h.requests();
    assert_no_api_errors(&reqs);
    let c = counts(&reqs);
    assert_eq!(c.get("POST /servers"), Some(&1), "{c:?}");
    assert_eq!(c.get("DELETE /servers/{id}"), Some(&1), "{c:?}");
    let deleted = reqs.iter().find(|r| r["method"] == "DELETE").unwrap()["path"].clone();
    assert_eq!(
        deleted,
        format!("/v1/servers/{}", servers["agent-tester"]["id"])
    );
    let after = servers_by_agent(&h.state());
    assert_eq!(after.len(), 3);
    for (agent, s) in &after {
        if agent == "agent-tester" {
            assert_ne!(s["id"], servers[agent]["id"]);
            assert_eq!(s["server_type"]["name"], "cx32");
        } else {
            assert_eq!(s["id"], servers[agent]["id"], "{agent} must not be touched");
        }
    }

    // 4. Remove one agent, add another.
    let project = p.read("agent-army.toml");
    let swapped = project.replace(
        "[[agents]]\nname = \"agent-pm\"\nrole = \"Product manager: turns requests into specs and tickets\"\nworkspace = \"agents/pm\"\n",
        "[[agents]]\nname = \"agent-ops\"\nrole = \"Operations\"\n",
    );
    assert_ne!(project, swapped);
    p.write("agent-army.toml", &swapped);
    h.reset_log();
    deploy(&h, &p).success();
    let c = counts(&h.requests());
    assert_eq!(c.get("POST /servers"), Some(&1), "{c:?}");
    assert_eq!(c.get("DELETE /servers/{id}"), Some(&1), "{c:?}");
    let st = h.state();
    let agents: Vec<String> = servers_by_agent(&st).into_keys().collect();
    assert_eq!(agents, ["agent-eng", "agent-ops", "agent-tester"]);
    assert_eq!(
        labelled(&st, "firewalls")[0]["applied_to"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // 5. Destroy: nothing labelled with the stack remains.
    h.reset_log();
    h.env(p.run())
        .args(["-s", "dev", "destroy", "--yes"])
        .run()
        .success()
        .stdout_has("Destroyed 3 server(s)");
    println!("destroy: {:?}", counts(&h.requests()));
    let st = h.state();
    for kind in ["servers", "firewalls", "ssh_keys"] {
        assert!(
            labelled(&st, kind).is_empty(),
            "{kind} left: {:?}",
            st[kind]
        );
    }
    assert!(state_json(&p, "dev").is_none(), "state cleared");
    h.assert_no_prism_errors();
}

#[test]
fn hetzner_request_counts_of_one_deploy() {
    let h = Hetzner::start();
    let p = Project::example();
    let t = Instant::now();
    deploy(&h, &p).success();
    let took = t.elapsed();
    let reqs = h.requests();
    assert_no_api_errors(&reqs);
    let c = counts(&reqs);
    println!(
        "API requests of one 3-agent deploy ({} in total, {took:.1?}):",
        reqs.len()
    );
    for (k, n) in &c {
        println!("  {n:>3}  {k}");
    }
    assert_eq!(c.get("GET /servers"), Some(&1), "{c:?}");
    assert_eq!(c.get("GET /firewalls"), Some(&1), "{c:?}");
    assert_eq!(c.get("POST /ssh_keys"), Some(&1), "{c:?}");
    assert_eq!(c.get("POST /firewalls"), Some(&1), "{c:?}");
    assert_eq!(c.get("POST /servers"), Some(&3), "{c:?}");
    // One poll loop for all three servers: 9 actions, each done after 2 polls.
    let polls = c.get("GET /actions").copied().unwrap_or(0);
    assert!(
        (2..=4).contains(&polls),
        "GET /actions {polls} times: {c:?}"
    );
    assert!(
        !c.keys().any(|k| k.starts_with("GET /actions/")),
        "actions polled one by one: {c:?}"
    );
    for r in reqs.iter().filter(|r| r["path"] == "/v1/actions") {
        let ids = r["query"]["id"].as_array().map_or(0, Vec::len);
        assert!(ids >= 1, "{r}");
    }
    h.assert_no_prism_errors();
}

#[test]
fn hetzner_rate_limit_and_server_errors_are_waited_out() {
    let h = Hetzner::start();
    let p = Project::example();
    // The first three requests (whatever they are) hit the rate limit; then the first two
    // server creations meet a 503.
    h.inject(json!({"status": 429, "count": 3}));
    h.inject(json!({"status": 503, "count": 2, "method": "POST", "path": "/v1/servers"}));
    let t = Instant::now();
    let out = deploy(&h, &p);
    let took = t.elapsed();
    out.success();
    let reqs = h.requests();
    let statuses: Vec<u64> = reqs.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(&statuses[..3], [429, 429, 429], "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 2);
    assert_eq!(
        reqs.iter()
            .filter(|r| r["method"] == "POST" && r["path"] == "/v1/servers" && r["status"] == 201)
            .count(),
        3
    );
    assert_eq!(servers_by_agent(&h.state()).len(), 3, "no duplicates");
    // RateLimit-Reset is one second away. The first three requests (the stack's servers and
    // firewalls, and the server types for the creates) go out together, so they wait out
    // the reset together: at least a second, not three.
    assert!(
        took >= Duration::from_secs(1),
        "429s not waited out: {took:?}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
    println!("deploy through 3x429 + 2x503 took {took:.1?}");
    h.assert_no_prism_errors();
}

#[test]
fn hetzner_prism_rejects_a_malformed_request() {
    let h = Hetzner::start();
    let r = http_raw(
        "POST",
        h.prism.port,
        "/servers",
        true,
        Some(r#"{"name":"dev-bad","image":"ubuntu-24.04"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.headers["content-type"].starts_with("application/problem+json"),
        "{:?}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["title"], "Invalid request");
    assert!(
        v["validation"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap().contains("server_type")),
        "{v}"
    );
    // Integer ssh key ids and GET /actions without ids are refused the same way.
    let r = http_raw(
        "POST",
        h.prism.port,
        "/servers",
        true,
        Some(r#"{"name":"dev-bad","image":"ubuntu-24.04","server_type":"cx22","ssh_keys":[1]}"#),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(
        http_raw("GET", h.prism.port, "/actions", true, None).status,
        422
    );
    assert!(h.requests().is_empty(), "nothing reached the fake");
    assert_eq!(h.prism_errors().len(), 3, "{:?}", h.prism_errors());
}

#[test]
fn hetzner_killed_deploy_converges_without_duplicates() {
    let h = Hetzner::start();
    let p = Project::example();
    // One create at a time, so exactly one server exists when the process dies.
    let mut cmd = h
        .env(p.run())
        .args(["-s", "dev", "deploy", "--yes", "--parallelism", "1"])
        .command();
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn agent-army");
    h.kill_after("POST", "/servers", child.id());
    let status = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "not killed: {status:?}");
    }
    // Let requests that were in flight through Prism land.
    std::thread::sleep(Duration::from_millis(1000));
    let before = servers_by_agent(&h.state());
    assert_eq!(before.len(), 1, "the first create went through: {before:?}");
    let crashed = state_json(&p, "dev").unwrap();
    assert!(crashed["network"]["id"].is_string(), "{crashed}");
    let pending: Vec<&String> = crashed["agents"]
        .as_object()
        .map(|a| {
            a.iter()
                .filter(|(_, v)| v.get("pending_create").is_some())
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default();
    println!(
        "killed after the first POST /servers: {} server(s) exist, pending creates in state: {pending:?}",
        before.len()
    );
    assert_eq!(
        pending,
        before.keys().collect::<Vec<_>>(),
        "the create intent was recorded: {crashed}"
    );

    h.reset_log();
    deploy(&h, &p).success();
    let c = counts(&h.requests());
    assert_eq!(
        c.get("POST /servers").copied().unwrap_or(0),
        3 - before.len(),
        "only missing servers are created: {c:?}"
    );
    assert_eq!(c.get("POST /firewalls"), None, "{c:?}");
    assert_eq!(c.get("POST /ssh_keys"), None, "{c:?}");
    let st = h.state();
    let after = servers_by_agent(&st);
    assert_eq!(
        after.keys().map(String::as_str).collect::<Vec<_>>(),
        ["agent-eng", "agent-pm", "agent-tester"]
    );
    assert_eq!(labelled(&st, "servers").len(), 3, "exactly one per agent");
    for (agent, s) in &before {
        assert_eq!(
            after[agent]["id"], s["id"],
            "{agent} adopted, not recreated"
        );
    }
    let local = state_json(&p, "dev").unwrap();
    for (agent, s) in &after {
        let a = &local["agents"][agent];
        assert_eq!(a["server_id"], s["id"].to_string(), "{agent}");
        assert!(a.get("pending_create").is_none(), "{agent}: {a}");
        assert_eq!(
            a["fingerprint"],
            crate::faults::machine(s["labels"]["agent-army/fingerprint"].as_str().unwrap())
        );
    }
    // And the stack is converged: nothing left to do.
    h.env(p.run())
        .args(["-s", "dev", "plan", "--detailed-exitcode"])
        .run()
        .code(0);
    h.assert_no_prism_errors();
}

#[test]
fn hetzner_unsupported_location_fails_with_advice() {
    let h = Hetzner::start();
    let p = Project::example();
    let stack = p.read("stacks/dev.toml");
    // A server type that Hetzner does not offer at the location, a location that does not
    // exist, a server type that does not exist: each is refused before anything is created,
    // so no firewall or SSH key is left behind.
    for (from, to, expect) in [
        (
            "location = \"fsn1\"",
            "location = \"sin\"",
            "server type `cx22` is not offered in `sin` (it is in: ",
        ),
        (
            "location = \"fsn1\"",
            "location = \"xyz9\"",
            "Hetzner has no location `xyz9`",
        ),
        (
            "server_type = \"cx22\"",
            "server_type = \"cx999\"",
            "Hetzner has no server type `cx999`",
        ),
    ] {
        assert!(stack.contains(from), "{from}");
        p.write("stacks/dev.toml", &stack.replace(from, to));
        h.reset_log();
        let out = deploy(&h, &p);
        assert_ne!(out.code, 0, "must fail\n{}\n{}", out.stdout, out.stderr);
        out.stderr_has(expect);
        let posts: Vec<_> = h
            .requests()
            .into_iter()
            .filter(|r| r["method"] != "GET")
            .collect();
        assert!(posts.is_empty(), "{to}: nothing may be created: {posts:?}");
        assert!(servers_by_agent(&h.state()).is_empty());
    }
    h.assert_no_prism_errors();
}

#[test]
fn hetzner_lost_answers_are_recovered_by_name() {
    // Actions also finish on their own after a second: the adopted server is never polled
    // through its create action.
    let h = Hetzner::start_with(&["--action-seconds", "1"]);
    let p = Project::example();
    // Each first create is carried out, but its answer is lost (503 on the way back).
    for path in ["/v1/ssh_keys", "/v1/firewalls", "/v1/servers"] {
        h.inject(json!({"status": 503, "count": 1, "method": "POST", "path": path, "after": true}));
    }
    deploy(&h, &p).success();
    let reqs = h.requests();
    let c = counts(&reqs);
    println!("deploy with three lost answers: {c:?}");
    // Retried, met the name taken (409 uniqueness_error), reused what the first call made.
    assert_eq!(c.get("POST /ssh_keys"), Some(&2), "{c:?}");
    assert_eq!(c.get("POST /firewalls"), Some(&2), "{c:?}");
    assert_eq!(c.get("POST /servers"), Some(&4), "{c:?}");
    assert_eq!(
        reqs.iter().filter(|r| r["status"] == 409).count(),
        3,
        "{c:?}"
    );
    let st = h.state();
    assert_eq!(labelled(&st, "ssh_keys").len(), 1);
    assert_eq!(labelled(&st, "firewalls").len(), 1);
    let servers = servers_by_agent(&st);
    assert_eq!(servers.len(), 3);
    assert_eq!(labelled(&st, "servers").len(), 3);
    let key_id = labelled(&st, "ssh_keys")[0]["id"].to_string();
    let local = state_json(&p, "dev").unwrap();
    assert_eq!(local["network"]["ssh_key_id"], key_id);
    for (agent, s) in &servers {
        assert_eq!(s["status"], "running", "{agent}");
        assert_eq!(local["agents"][agent]["server_id"], s["id"].to_string());
        assert_eq!(
            st["server_inputs"][s["id"].to_string()]["ssh_keys"],
            json!([key_id])
        );
    }
    h.reset_log();
    deploy(&h, &p).success().stdout_has("No changes");
    h.assert_no_prism_errors();
}

#[test]
fn hetzner_plan_estimates_the_monthly_cost_from_the_api_prices() {
    let h = Hetzner::start();
    let p = Project::example();
    // 3 agents on cx22 in fsn1: the fake publishes 3.79 EUR net, 19 % VAT on top.
    let out = h.env(p.run()).args(["-s", "dev", "plan"]).run();
    out.success().stdout_has(
        "Estimated cost: 13.53 EUR/month (11.37 net) for 3 server(s) in fsn1 at Hetzner's list prices (cx22 3.79 net)",
    );
    let reqs = h.requests();
    let asked: Vec<&Value> = reqs
        .iter()
        .filter(|r| r["path"] == "/v1/server_types")
        .collect();
    assert_eq!(asked.len(), 1, "one lookup per distinct server type");
    assert_eq!(asked[0]["query"]["name"], serde_json::json!(["cx22"]));
    assert!(mutating(&reqs).is_empty(), "plan changes nothing");
    let doc = h
        .env(p.run())
        .args(["-s", "dev", "-o", "json", "plan"])
        .run()
        .json();
    assert_eq!(doc["cost"]["status"], "estimate");
    assert_eq!(doc["cost"]["monthly_net"], 11.37);
    assert_eq!(doc["cost"]["monthly_gross"], 13.53);
    assert_eq!(doc["cost"]["prices"]["cx22"]["net"], 3.79);
    // A type the location does not sell has no price, and the plan says so.
    p.write(
        "stacks/dev.toml",
        &p.read("stacks/dev.toml")
            .replace("location = \"fsn1\"", "location = \"ash\""),
    );
    h.env(p.run())
        .args(["-s", "dev", "plan"])
        .run()
        .success()
        .stdout_has("Estimated cost: n/a (server type `cx22` has no price in `ash`).");
    // Without a token: said, not guessed.
    p.run()
        .args(["-s", "dev", "plan"])
        .run()
        .success()
        .stdout_has("Estimated cost: n/a (no Hetzner API token to read the list prices).");
    h.assert_no_prism_errors();
}

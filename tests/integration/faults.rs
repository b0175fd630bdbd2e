//! Fault injection: deploy → change one agent's type → destroy, in several seeded rounds per
//! provider, through `tests/support/fault_proxy.py`, which answers 500/503, throttles, holds
//! requests past the client's timeout and resets connections, either before forwarding (the
//! cloud never saw the request) or after (the cloud did it, the answer is lost).
//!
//! A run that fails under faults is run again, faults still on, as a user would. After the
//! run that succeeds, the cloud must hold exactly the declared servers (one per agent, of the
//! declared type), one firewall / security group (and one break-glass key on Hetzner),
//! nothing else tagged with the stack, and state must name exactly those ids. After destroy,
//! nothing tagged remains and state is gone.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use serde_json::Value;

use crate::support::hetzner::Hetzner;
use crate::support::servers::{FaultProxy, Moto, http_json};
use crate::support::{Out, Project, Run, state_json};

pub(crate) const AGENTS: [&str; 3] = ["agent-eng", "agent-pm", "agent-tester"];
/// Per-attempt timeout of agent-army's cloud clients in these tests.
pub(crate) const REQUEST_TIMEOUT_MS: u64 = 2000;
/// How long a `timeout` fault holds a request before dropping it: past the client's timeout.
const HOLD_SECONDS: f64 = 8.0;
/// The range the test stacks open port 22 to.
pub(crate) const SSH_CIDR: &str = "203.0.113.0/24";
const KINDS: [&str; 5] = ["500", "503", "throttle", "timeout", "reset"];
/// Share of requests that get a fault...
const RATE: f64 = 0.15;
/// ... and of those that change something (creates, deletes), so that lost answers of
/// creates happen in every round.
const MUTATING_RATE: f64 = 0.3;
const ROUNDS: u64 = 4;
/// Attempts of one run (the first one included) before the test gives up.
const MAX_ATTEMPTS: usize = 6;

pub(crate) enum Backend {
    Aws { moto: Moto, client: Client },
    Hetzner(Hetzner),
}

/// A server as the cloud reports it.
#[derive(Debug, Clone)]
pub(crate) struct ServerView {
    pub id: String,
    pub agent: String,
    pub instance_type: String,
    pub status: String,
    pub fingerprint: String,
}

/// Everything tagged with the stack, read from the emulator directly (not through the proxy).
#[derive(Debug, Default)]
pub(crate) struct CloudView {
    /// Servers not terminated / not being deleted.
    pub servers: Vec<ServerView>,
    /// Security groups / firewalls.
    pub networks: Vec<String>,
    /// Break-glass SSH keys (Hetzner).
    pub ssh_keys: Vec<String>,
}

/// One emulator, a fault proxy in front of it, and a project that deploys through the proxy.
pub(crate) struct Rig {
    pub rt: tokio::runtime::Runtime,
    pub backend: Backend,
    pub proxy: FaultProxy,
    pub p: Project,
    pub stack: &'static str,
    original: String,
}

impl Rig {
    /// moto (behind its recording proxy) with the fault proxy in front; stack `prod`.
    pub fn aws() -> Rig {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let moto = Moto::start();
        let client = rt.block_on(crate::aws::client(&moto));
        let proxy = FaultProxy::start(&moto.endpoint(), "aws");
        Self::new(rt, Backend::Aws { moto, client }, proxy, "prod")
    }

    /// The Hetzner fake behind Prism, the fault proxy in front of Prism; stack `dev`. Actions
    /// also finish on their own after a second, as on the real API (a killed run may never
    /// poll its actions).
    pub fn hetzner() -> Rig {
        Self::hetzner_with(&["--action-seconds", "1"])
    }

    /// With these arguments for the fake.
    pub fn hetzner_with(fake_args: &[&str]) -> Rig {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let h = Hetzner::start_with(fake_args);
        let proxy = FaultProxy::start(&h.endpoint(), "hetzner");
        Self::new(rt, Backend::Hetzner(h), proxy, "dev")
    }

    fn new(
        rt: tokio::runtime::Runtime,
        backend: Backend,
        proxy: FaultProxy,
        stack: &'static str,
    ) -> Rig {
        let p = Project::example();
        // Port 22 open to one range, so that firewall rules go through the faults too.
        let stack_file = format!("stacks/{stack}.toml");
        let text = p.read(&stack_file);
        assert!(text.contains("allowed_ssh_cidrs = []"));
        p.write(
            &stack_file,
            &text.replace(
                "allowed_ssh_cidrs = []",
                &format!("allowed_ssh_cidrs = [\"{SSH_CIDR}\"]"),
            ),
        );
        let original = p.read("agent-army.toml");
        Rig {
            rt,
            backend,
            proxy,
            p,
            stack,
            original,
        }
    }

    pub fn provider(&self) -> &'static str {
        match self.backend {
            Backend::Aws { .. } => "aws",
            Backend::Hetzner(_) => "hetzner",
        }
    }

    /// The stack's default server type, and the one a "change" switches an agent to.
    pub fn types(&self) -> (&'static str, &'static str) {
        match self.backend {
            Backend::Aws { .. } => ("t3.medium", "t3.large"),
            Backend::Hetzner(_) => ("cx22", "cx32"),
        }
    }

    /// A run of the binary against the proxy, for this rig's stack.
    pub fn run(&self) -> Run {
        let r = self
            .p
            .run()
            .env(
                "AGENT_ARMY_REQUEST_TIMEOUT_MS",
                REQUEST_TIMEOUT_MS.to_string(),
            )
            .args(["-s", self.stack]);
        match &self.backend {
            Backend::Aws { .. } => r
                .env("AWS_ENDPOINT_URL", self.proxy.endpoint())
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .env("AWS_EC2_METADATA_DISABLED", "true"),
            Backend::Hetzner(_) => r
                .env("HCLOUD_ENDPOINT", self.proxy.endpoint())
                .env("HCLOUD_TOKEN", "test-token"),
        }
    }

    pub fn deploy(&self) -> Out {
        self.run().args(["deploy", "--yes"]).run()
    }

    pub fn destroy(&self) -> Out {
        self.run().args(["destroy", "--yes"]).run()
    }

    /// Declared agents and their server types, with `changed` switched to the other type.
    pub fn expected(&self, changed: Option<&str>) -> BTreeMap<String, String> {
        let (normal, big) = self.types();
        AGENTS
            .iter()
            .map(|a| {
                let t = if Some(*a) == changed { big } else { normal };
                (a.to_string(), t.to_string())
            })
            .collect()
    }

    /// Switch `agent` to the bigger type (`None`: back to the original project).
    pub fn set_changed(&self, agent: Option<&str>) {
        let text = match agent {
            None => self.original.clone(),
            Some(a) => {
                let from = format!("name = \"{a}\"\n");
                assert!(self.original.contains(&from), "no agent {a}");
                self.original.replace(
                    &from,
                    &format!("{from}instance_type = \"{}\"\n", self.types().1),
                )
            }
        };
        self.p.write("agent-army.toml", &text);
    }

    /// What the cloud holds for the stack.
    pub fn cloud(&self) -> CloudView {
        match &self.backend {
            Backend::Aws { client, .. } => self.rt.block_on(aws_view(client, self.stack)),
            Backend::Hetzner(h) => hetzner_view(&h.state(), self.stack),
        }
    }

    /// Servers the emulator ever created (including since-deleted ones).
    pub fn servers_ever_created(&self) -> usize {
        match &self.backend {
            Backend::Aws { moto, .. } => {
                let log = http_json("GET", moto.proxy.port, "/__proxy/requests", None);
                log.as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["action"] == "RunInstances" && r["status"] == 200)
                    .count()
            }
            Backend::Hetzner(h) => h
                .requests()
                .iter()
                .filter(|r| {
                    r["method"] == "POST" && r["path"] == "/v1/servers" && r["status"] == 201
                })
                .count(),
        }
    }

    /// Exactly one server per declared agent, of its declared type, running; one network
    /// (and one key on Hetzner); nothing else tagged; state names exactly these ids.
    #[track_caller]
    pub fn assert_converged(&self, expected: &BTreeMap<String, String>, ctx: &str) {
        let v = self.cloud();
        let mut agents: Vec<&str> = v.servers.iter().map(|s| s.agent.as_str()).collect();
        agents.sort();
        let want: Vec<&str> = expected.keys().map(String::as_str).collect();
        assert_eq!(
            agents, want,
            "{ctx}: exactly one server per agent expected: {v:#?}"
        );
        for s in &v.servers {
            assert_eq!(
                s.instance_type, expected[&s.agent],
                "{ctx}: {} has the wrong type: {v:#?}",
                s.agent
            );
            // A server a killed run launched may still be starting when the next run adopts
            // it; it must not be stopped or anything else.
            assert!(
                matches!(
                    s.status.as_str(),
                    "running" | "pending" | "initializing" | "starting"
                ),
                "{ctx}: {v:#?}"
            );
        }
        assert_eq!(v.networks.len(), 1, "{ctx}: one firewall: {v:#?}");
        let st = state_json(&self.p, self.stack).unwrap_or_else(|| panic!("{ctx}: no state"));
        assert_eq!(
            st["network"]["id"], v.networks[0],
            "{ctx}: state network: {st}"
        );
        if let Backend::Hetzner(_) = self.backend {
            assert_eq!(v.ssh_keys.len(), 1, "{ctx}: one break-glass key: {v:#?}");
            // A firewall adopted from the label search (its run died before recording it)
            // is recorded without the key's id: the key is then found by its labels.
            let key = &st["network"]["ssh_key_id"];
            assert!(
                key.is_null() || *key == v.ssh_keys[0],
                "{ctx}: state key: {st}"
            );
        }
        let state_agents: Vec<&str> = st["agents"]
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(state_agents, want, "{ctx}: agents in state: {st}");
        for s in &v.servers {
            let a = &st["agents"][&s.agent];
            assert_eq!(a["server_id"], s.id.as_str(), "{ctx}: {}: {st}", s.agent);
            assert!(a.get("pending_create").is_none(), "{ctx}: {}: {a}", s.agent);
            // The label is `<machine>.<configuration>`; state keeps the machine's.
            assert_eq!(
                a["fingerprint"],
                machine(&s.fingerprint),
                "{ctx}: {}",
                s.agent
            );
        }
    }

    /// Nothing tagged with the stack remains, and state is gone.
    #[track_caller]
    pub fn assert_destroyed(&self, ctx: &str) {
        let v = self.cloud();
        assert!(
            v.servers.is_empty() && v.networks.is_empty() && v.ssh_keys.is_empty(),
            "{ctx}: left behind: {v:#?}"
        );
        assert!(
            state_json(&self.p, self.stack).is_none(),
            "{ctx}: state not cleared"
        );
    }

    /// `plan --detailed-exitcode` without faults: nothing to do.
    #[track_caller]
    pub fn assert_plan_clean(&self, ctx: &str) {
        let out = self.run().args(["plan", "--detailed-exitcode"]).run();
        assert_eq!(
            out.code, 0,
            "{ctx}: plan after convergence\n{}\n{}",
            out.stdout, out.stderr
        );
    }
}

async fn aws_view(c: &Client, stack: &str) -> CloudView {
    let tag = |k: &str, v: &str| {
        Filter::builder()
            .name(format!("tag:agent-army:{k}"))
            .values(v)
            .build()
    };
    let mut view = CloudView::default();
    let out = c
        .describe_instances()
        .filters(tag("project", "acme-agents"))
        .filters(tag("stack", stack))
        .send()
        .await
        .unwrap();
    for r in out.reservations() {
        for i in r.instances() {
            let status = i
                .state()
                .and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default();
            if status == "terminated" || status == "shutting-down" {
                continue;
            }
            let t = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .unwrap_or("")
                    .to_string()
            };
            view.servers.push(ServerView {
                id: i.instance_id().unwrap_or_default().to_string(),
                agent: t("agent-army:agent"),
                instance_type: i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default(),
                status,
                fingerprint: t("agent-army:fingerprint"),
            });
        }
    }
    let sgs = c
        .describe_security_groups()
        .filters(tag("project", "acme-agents"))
        .filters(tag("stack", stack))
        .send()
        .await
        .unwrap();
    view.networks = sgs
        .security_groups()
        .iter()
        .map(|g| g.group_id().unwrap_or_default().to_string())
        .collect();
    view
}

fn hetzner_view(state: &Value, stack: &str) -> CloudView {
    let ours = |o: &&Value| {
        o["labels"]["agent-army/project"] == "acme-agents"
            && o["labels"]["agent-army/stack"] == stack
    };
    let ids = |kind: &str| -> Vec<String> {
        state[kind]
            .as_array()
            .unwrap()
            .iter()
            .filter(ours)
            .map(|o| o["id"].to_string())
            .collect()
    };
    CloudView {
        servers: state["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(ours)
            // Being deleted: the API finishes that on its own.
            .filter(|s| s["status"] != "deleting")
            .map(|s| ServerView {
                id: s["id"].to_string(),
                agent: s["labels"]["agent-army/agent"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                instance_type: s["server_type"]["name"].as_str().unwrap_or("").to_string(),
                status: s["status"].as_str().unwrap_or("").to_string(),
                fingerprint: s["labels"]["agent-army/fingerprint"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            })
            .collect(),
        networks: ids("firewalls"),
        ssh_keys: ids("ssh_keys"),
    }
}

/// The `error:` lines of a failed run, on one line.
pub(crate) fn error_lines(stderr: &str) -> String {
    let v: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error") || l.contains("failed"))
        .take(4)
        .collect();
    v.join(" | ")
}

#[derive(Default)]
struct Tally {
    runs: usize,
    attempts: usize,
    retried_runs: usize,
    failures: Vec<String>,
}

/// The machine half of a fingerprint label (`<machine>.<configuration>`).
pub fn machine(label: &str) -> &str {
    label.split('.').next().unwrap_or(label)
}

impl Tally {
    /// Run `f` until it succeeds (exit 0), at most [`MAX_ATTEMPTS`] times. Only exit 1 (a
    /// cloud operation failed) is acceptable under faults.
    fn until_success(&mut self, what: &str, f: impl Fn() -> Out) {
        for attempt in 1..=MAX_ATTEMPTS {
            let out = f();
            self.attempts += 1;
            if out.code == 0 {
                self.runs += 1;
                if attempt > 1 {
                    self.retried_runs += 1;
                }
                return;
            }
            assert_eq!(
                out.code, 1,
                "{what}: only exit 1 is expected under faults\nstdout:\n{}\nstderr:\n{}",
                out.stdout, out.stderr
            );
            self.failures.push(format!(
                "{what} attempt {attempt}: {}",
                error_lines(&out.stderr)
            ));
        }
        panic!(
            "{what}: no success in {MAX_ATTEMPTS} attempts:\n{}",
            self.failures.join("\n")
        );
    }
}

fn faults_rounds(rig: Rig, seed_base: u64) {
    let started = std::time::Instant::now();
    let provider = rig.provider();
    let mut tally = Tally::default();
    rig.proxy.reset();
    for round in 0..ROUNDS {
        let seed = seed_base + round;
        let ctx = |step: &str| format!("{provider} round {round} (seed {seed}) {step}");
        let faults_on = |seed: u64| {
            rig.proxy
                .enable(seed, RATE, MUTATING_RATE, &KINDS, HOLD_SECONDS)
        };
        rig.set_changed(None);
        faults_on(seed);
        tally.until_success(&ctx("deploy"), || rig.deploy());
        rig.assert_converged(&rig.expected(None), &ctx("deploy"));
        rig.proxy.disable();
        rig.assert_plan_clean(&ctx("deploy"));
        faults_on(seed + 500);

        let agent = AGENTS[round as usize % AGENTS.len()];
        rig.set_changed(Some(agent));
        tally.until_success(&ctx("change"), || rig.deploy());
        rig.assert_converged(&rig.expected(Some(agent)), &ctx("change"));
        rig.proxy.disable();
        rig.assert_plan_clean(&ctx("change"));

        faults_on(seed + 1000);
        tally.until_success(&ctx("destroy"), || rig.destroy());
        rig.assert_destroyed(&ctx("destroy"));
        rig.proxy.disable();
    }
    let stats = rig.proxy.stats();
    let injected = stats["injected"].as_object().cloned().unwrap_or_default();
    let total: u64 = injected.values().filter_map(Value::as_u64).sum();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for (k, n) in &injected {
        let kind = k.split(':').next().unwrap_or("").to_string();
        *by_kind.entry(kind).or_default() += n.as_u64().unwrap_or(0);
    }
    let on_creates: Vec<String> = stats["by_target"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    k.contains(":after")
                        && (k.contains("RunInstances")
                            || k.contains("CreateSecurityGroup")
                            || k.contains("POST /servers")
                            || k.contains("POST /firewalls")
                            || k.contains("POST /ssh_keys"))
                })
                .map(|(k, n)| format!("{k} x{n}"))
                .collect()
        })
        .unwrap_or_default();
    let created = rig.servers_ever_created();
    // Each round creates 3 servers and replaces 1.
    let needed = ROUNDS as usize * 4;
    println!(
        "{provider} faults: {ROUNDS} rounds x (deploy, change, destroy) at rate {RATE} ({MUTATING_RATE} on changes): {} requests, {total} faults injected and survived in {:.1?}",
        stats["requests"],
        started.elapsed()
    );
    println!("  by kind: {by_kind:?}");
    println!("  by kind and phase: {injected:?}");
    println!("  lost answers of creates: {on_creates:?}");
    println!(
        "  runs: {} succeeded after {} attempts; {} needed a retry",
        tally.runs, tally.attempts, tally.retried_runs
    );
    for f in &tally.failures {
        println!("    {f}");
    }
    println!(
        "  servers created: {created} for {needed} needed ({} duplicates, all removed)",
        created.saturating_sub(needed)
    );
    let t = &stats["timeouts"];
    println!(
        "  timeout faults: {} abandoned by the client's {REQUEST_TIMEOUT_MS} ms per-attempt timeout (after at most {} s), {} waited out the {HOLD_SECONDS} s hold",
        t["abandoned"], t["abandoned_after_max"], t["held_out"]
    );
    assert_eq!(
        t["held_out"], 0,
        "a request was held {HOLD_SECONDS} s without the client giving up: no per-attempt timeout"
    );
    if let Backend::Hetzner(h) = &rig.backend {
        h.assert_no_prism_errors();
    }
    // Every successful run converged on its own; no extra deploy was needed.
    assert_eq!(tally.runs, ROUNDS as usize * 3);
    assert!(total > 0, "no fault was injected");
}

#[test]
fn aws_faults_deploy_change_destroy_converge() {
    faults_rounds(Rig::aws(), 100);
}

#[test]
fn hetzner_faults_deploy_change_destroy_converge() {
    faults_rounds(Rig::hetzner(), 200);
}

/// The proxy's own faults have the documented shapes.
#[test]
fn fault_proxy_answers_have_the_cloud_shapes() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint(), "aws");
    proxy.enable(1, 1.0, 1.0, &["throttle"], 1.0);
    let body = "Action=DescribeVpcs&Version=2016-11-15";
    let r = crate::support::hetzner::http_raw("POST", proxy.server.port, "/", false, Some(body));
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>"),
        "{}",
        r.body
    );
    drop(proxy);
    let h = Hetzner::start();
    let proxy = FaultProxy::start(&h.endpoint(), "hetzner");
    proxy.enable(1, 1.0, 1.0, &["throttle"], 1.0);
    let r = crate::support::hetzner::http_raw("GET", proxy.server.port, "/servers", true, None);
    assert_eq!(r.status, 429);
    assert_eq!(r.headers["ratelimit-remaining"], "0");
    let reset: u64 = r.headers["ratelimit-reset"].parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now..=now + 2).contains(&reset), "reset {reset}, now {now}");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    // 500 before and after: the fake sees only the "after" one.
    proxy.enable(3, 1.0, 1.0, &["500"], 1.0);
    for _ in 0..8 {
        let r = crate::support::hetzner::http_raw("GET", proxy.server.port, "/servers", true, None);
        assert_eq!(r.status, 500);
        assert_eq!(r.json()["error"]["code"], "server_error");
    }
    let s = proxy.stats();
    let after = s["injected"]["500:after"].as_u64().unwrap_or(0);
    let before = s["injected"]["500:before"].as_u64().unwrap_or(0);
    assert_eq!(after + before, 8, "{s}");
    assert!(after > 0 && before > 0, "{s}");
    assert_eq!(h.requests().len() as u64, after, "{s}");
}

/// Lost answers of creates (the cloud created the thing, the client sees a 500, a reset or
/// a timeout, `n` times in a row for `target` only, kinds drawn from `seed`): one deploy must still succeed and make
/// exactly one of everything. For `RunInstances` this holds only because agent-army looks
/// for the instance by its tags before launching again (moto, unlike EC2, ignores the
/// ClientToken); for the others, because a retried create that meets "already exists" reuses
/// the stack's own resource.
fn lost_create_answers(rig: &Rig, target: &str, n: u64, seed: u64) {
    let created_before = rig.servers_ever_created();
    rig.proxy.reset();
    rig.proxy.configure(serde_json::json!({
        "seed": seed, "rate": 1.0, "kinds": ["500", "reset", "timeout"], "phases": ["after"],
        "targets": [target], "max_faults": n, "hold_seconds": HOLD_SECONDS,
    }));
    let out = rig.deploy();
    let stats = rig.proxy.stats();
    rig.proxy.disable();
    assert_eq!(out.code, 0, "{target}: {}\n{}", out.stdout, out.stderr);
    println!(
        "{}: deploy through {n} lost answers of {target}: {}",
        rig.provider(),
        stats["injected"]
    );
    let injected: u64 = stats["injected"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(injected, n, "{stats}");
    let ctx = format!("deploy through lost answers of {target}");
    rig.assert_converged(&rig.expected(None), &ctx);
    assert_eq!(
        rig.servers_ever_created() - created_before,
        3,
        "{ctx}: a server was created twice"
    );
    rig.assert_plan_clean(&ctx);
    let out = rig.destroy();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    rig.assert_destroyed(&ctx);
}

#[test]
fn aws_lost_create_answers_make_no_duplicates() {
    let rig = Rig::aws();
    lost_create_answers(&rig, "CreateSecurityGroup", 2, 1);
    lost_create_answers(&rig, "AuthorizeSecurityGroupIngress", 2, 9);
    lost_create_answers(&rig, "RunInstances", 3, 8);
}

#[test]
fn hetzner_lost_create_answers_make_no_duplicates() {
    let rig = Rig::hetzner();
    lost_create_answers(&rig, "POST /ssh_keys", 2, 1);
    lost_create_answers(&rig, "POST /firewalls", 2, 9);
    lost_create_answers(&rig, "POST /servers", 3, 8);
    if let Backend::Hetzner(h) = &rig.backend {
        h.assert_no_prism_errors();
    }
}

/// Throttles narrow the window of calls in flight (logged), and the fleet still converges with
/// one server per agent: `n` throttles of the cloud's own shape on creates, before they reach
/// the cloud.
fn throttled_creates_narrow_the_window(rig: &Rig, target: &str) {
    rig.proxy.reset();
    rig.proxy.configure(serde_json::json!({
        "seed": 7, "rate": 1.0, "kinds": ["throttle"], "phases": ["before"],
        "targets": [target], "max_faults": 4,
    }));
    let out = rig
        .run()
        .env("AGENT_ARMY_LOG", "info")
        .args(["deploy", "--yes"])
        .run();
    rig.proxy.disable();
    out.success();
    let s = rig.proxy.stats();
    assert_eq!(s["injected"]["throttle:before"], 4, "{s}");
    out.stderr_has("throttled by the cloud: at most");
    rig.assert_converged(&rig.expected(None), "after throttled creates");
    assert_eq!(rig.servers_ever_created(), AGENTS.len());
}

#[test]
fn aws_throttles_narrow_the_window_and_the_fleet_converges() {
    throttled_creates_narrow_the_window(&Rig::aws(), "RunInstances");
}

#[test]
fn hetzner_throttles_narrow_the_window_and_the_fleet_converges() {
    throttled_creates_narrow_the_window(&Rig::hetzner(), "POST /servers");
}

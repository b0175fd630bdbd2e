//! Kill tests: agent-army is SIGKILLed at seeded points of a deploy, of a change (one agent
//! replaced) and of a destroy, then run again without faults. Every run again must converge:
//! exactly one server per agent, nothing orphaned, state naming exactly the cloud's ids,
//! servers made by the killed run adopted rather than made again; after destroy, nothing.
//!
//! A kill point is "the N-th request through the proxy", N drawn (stratified, from a seeded
//! generator) over the request count of a clean run of the same step, killed either before
//! that request is forwarded or after the cloud answered it (before the answer reaches the
//! process). One emulator per provider serves every point; each cycle ends destroyed.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::faults::{AGENTS, CloudView, Rig};
use crate::support::{Out, state_json};

/// Kill cycles per provider; each cycle kills a deploy, a change and a destroy.
const CYCLES: usize = 12;

/// splitmix64: a small seeded generator (the suite has no `rand`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`hi > lo`).
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

/// The `i`-th of `count` kill points over `1..=n` requests: one per stratum, so the points
/// spread over the whole run.
fn point(rng: &mut Rng, i: usize, count: usize, n: usize) -> usize {
    let lo = 1 + i * n / count;
    let hi = (1 + (i + 1) * n / count).max(lo + 1);
    rng.range(lo, hi.min(n + 1).max(lo + 1))
}

#[derive(Default)]
struct Tally {
    /// step → (points, killed, completed before the point was reached)
    steps: BTreeMap<&'static str, (usize, usize, usize)>,
    killed_after_create: usize,
    adopted: usize,
}

/// Run `args` and SIGKILL it at the `n`-th proxied request; true when it was killed.
fn killed_run(rig: &Rig, args: &[&str], n: usize, phase: &str) -> bool {
    rig.proxy.arm_kill(n, phase);
    let mut cmd = rig.run().args(args).command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn agent-army");
    rig.proxy.kill_pid(child.id());
    let status = child.wait().expect("wait agent-army");
    rig.proxy.disarm();
    // Requests the dead process had in flight still land: wait for them.
    rig.proxy.wait_idle(Duration::from_secs(30));
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() == Some(9) {
            return true;
        }
    }
    assert!(
        status.success(),
        "{args:?} not killed at request {n} ({phase}) but failed: {status:?}"
    );
    false
}

/// The target of the `n`-th request of the last killed run (e.g. `RunInstances`).
fn target_at(rig: &Rig, n: usize) -> String {
    rig.proxy
        .requests()
        .get(n - 1)
        .and_then(|r| r["target"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[track_caller]
fn success(out: Out, what: &str) {
    assert_eq!(
        out.code, 0,
        "{what} after a kill did not succeed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
}

/// What a killed run left behind: the cloud, and the server ids state records.
fn left_behind(rig: &Rig) -> (CloudView, Vec<String>) {
    let recorded = state_json(&rig.p, rig.stack)
        .and_then(|st| {
            st["agents"].as_object().map(|m| {
                m.values()
                    .filter_map(|a| a["server_id"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    (rig.cloud(), recorded)
}

/// Servers the killed run launched without recording them, with the agent's current
/// fingerprint, were kept (adopted), not made again. Returns how many there were.
#[track_caller]
fn assert_adopted(rig: &Rig, left: &(CloudView, Vec<String>), ctx: &str) -> usize {
    let st = state_json(&rig.p, rig.stack).expect("state");
    let after = rig.cloud();
    let mut adopted = 0;
    for s in left.0.servers.iter().filter(|s| !left.1.contains(&s.id)) {
        if st["agents"][&s.agent]["fingerprint"] == crate::faults::machine(&s.fingerprint) {
            assert!(
                after.servers.iter().any(|a| a.id == s.id),
                "{ctx}: {} ({}) launched by the killed run was not adopted: {after:#?}",
                s.id,
                s.agent
            );
            adopted += 1;
        }
    }
    adopted
}

fn kill_cycles(rig: Rig, seed: u64) {
    let started = Instant::now();
    let provider = rig.provider();
    let mut rng = Rng(seed);

    // Calibration: request counts of a clean deploy, change and destroy.
    let count = |f: &dyn Fn() -> Out| {
        rig.proxy.reset();
        success(f(), "calibration run");
        rig.proxy.stats()["requests"].as_u64().unwrap() as usize
    };
    rig.set_changed(None);
    let n_deploy = count(&|| rig.deploy());
    rig.set_changed(Some(AGENTS[0]));
    let n_change = count(&|| rig.deploy());
    let n_destroy = count(&|| rig.destroy());
    rig.assert_destroyed("calibration");
    let created_before = rig.servers_ever_created();
    println!(
        "{provider} kills: clean runs make {n_deploy} (deploy), {n_change} (change), {n_destroy} (destroy) requests"
    );

    let mut tally = Tally::default();
    let note = |tally: &mut Tally, step: &'static str, killed: bool| {
        let e = tally.steps.entry(step).or_default();
        e.0 += 1;
        if killed {
            e.1 += 1;
        } else {
            e.2 += 1;
        }
    };
    for i in 0..CYCLES {
        let changed = AGENTS[i % AGENTS.len()];
        let phase = |rng: &mut Rng| {
            if rng.next() & 1 == 0 {
                "before"
            } else {
                "after"
            }
        };

        // 1. Deploy from nothing, killed; run again.
        rig.set_changed(None);
        let (n, ph) = (point(&mut rng, i, CYCLES, n_deploy), phase(&mut rng));
        let ctx = format!("{provider} cycle {i}: deploy killed at request {n} ({ph})");
        rig.proxy.reset();
        let killed = killed_run(&rig, &["deploy", "--yes"], n, ph);
        let target = target_at(&rig, n);
        if killed && ph == "after" && is_create(&target) {
            tally.killed_after_create += 1;
        }
        note(&mut tally, "deploy", killed);
        let left = left_behind(&rig);
        success(rig.deploy(), &ctx);
        rig.assert_converged(&rig.expected(None), &ctx);
        tally.adopted += assert_adopted(&rig, &left, &ctx);

        // 2. Change one agent's type (a replacement), killed; run again.
        rig.set_changed(Some(changed));
        let (n, ph) = (point(&mut rng, i, CYCLES, n_change), phase(&mut rng));
        let ctx = format!("{provider} cycle {i}: change of {changed} killed at request {n} ({ph})");
        rig.proxy.reset();
        let killed = killed_run(&rig, &["deploy", "--yes"], n, ph);
        let target = target_at(&rig, n);
        if killed && ph == "after" && is_create(&target) {
            tally.killed_after_create += 1;
        }
        note(&mut tally, "change", killed);
        let left = left_behind(&rig);
        success(rig.deploy(), &ctx);
        rig.assert_converged(&rig.expected(Some(changed)), &ctx);
        tally.adopted += assert_adopted(&rig, &left, &ctx);

        // 3. Destroy, killed; run again.
        let (n, ph) = (point(&mut rng, i, CYCLES, n_destroy), phase(&mut rng));
        let ctx = format!("{provider} cycle {i}: destroy killed at request {n} ({ph})");
        let killed = killed_run(&rig, &["destroy", "--yes"], n, ph);
        note(&mut tally, "destroy", killed);
        success(rig.destroy(), &ctx);
        rig.assert_destroyed(&ctx);
    }

    // Every server the cycles made was needed: 3 per deploy, 1 per change.
    let created = rig.servers_ever_created() - created_before;
    let points: usize = tally.steps.values().map(|v| v.0).sum();
    let killed: usize = tally.steps.values().map(|v| v.1).sum();
    println!(
        "{provider} kills: {points} kill points ({killed} killed, {} ran to the end first) in {:.1?}",
        points - killed,
        started.elapsed()
    );
    for (step, (p, k, c)) in &tally.steps {
        println!("  {step}: {p} points, {k} killed, {c} completed");
    }
    println!(
        "  {} kills right after a create was carried out; {} servers launched but not recorded by killed runs, all adopted",
        tally.killed_after_create, tally.adopted
    );
    println!(
        "  servers created: {created} for {} needed: {} duplicates; every run again converged, 0 orphans",
        CYCLES * 4,
        created.saturating_sub(CYCLES * 4)
    );
    assert_eq!(created, CYCLES * 4, "servers were created twice");
    if let crate::faults::Backend::Hetzner(h) = &rig.backend {
        h.assert_no_prism_errors();
    }
}

fn is_create(target: &str) -> bool {
    matches!(
        target,
        "RunInstances"
            | "CreateSecurityGroup"
            | "AuthorizeSecurityGroupIngress"
            | "POST /servers"
            | "POST /firewalls"
            | "POST /ssh_keys"
    )
}

#[test]
fn aws_killed_at_random_points_converges() {
    kill_cycles(Rig::aws(), 0xA175);
}

#[test]
fn hetzner_killed_at_random_points_converges() {
    kill_cycles(Rig::hetzner(), 0x4E72);
}

/// Spawn `args` against the rig, let `arm(pid)` set a kill order, and require the SIGKILL.
fn killed_by(rig: &Rig, args: &[&str], arm: impl FnOnce(u32)) {
    let mut cmd = rig.run().args(args).command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn agent-army");
    arm(child.id());
    let status = child.wait().expect("wait agent-army");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "not killed: {status:?}");
    }
    rig.proxy.wait_idle(Duration::from_secs(30));
}

/// Killed right after creating the security group, before authorizing port 22 and before
/// recording it: the next run finds the group by its tags, fixes its rules and uses it.
#[test]
fn aws_killed_after_create_security_group_converges() {
    let rig = Rig::aws();
    let crate::faults::Backend::Aws { moto, .. } = &rig.backend else {
        unreachable!()
    };
    killed_by(&rig, &["deploy", "--yes"], |pid| {
        moto.kill_after("CreateSecurityGroup", pid)
    });
    let left = rig.cloud();
    assert_eq!(left.networks.len(), 1, "{left:#?}");
    assert!(state_json(&rig.p, rig.stack).is_some_and(|s| s["network"].is_null()));
    success(
        rig.deploy(),
        "deploy after a kill after CreateSecurityGroup",
    );
    rig.assert_converged(&rig.expected(None), "after CreateSecurityGroup");
    assert_eq!(rig.cloud().networks, left.networks, "the group was adopted");
    rig.assert_plan_clean("after CreateSecurityGroup");
}

/// Killed right after deleting the old server of a replacement: the next run creates the
/// new one while the old one still holds its name (Hetzner names are unique), so it waits
/// for the old one to go instead of failing with `uniqueness_error`.
#[test]
fn hetzner_replacement_killed_after_deleting_the_old_server_converges() {
    // Deletions take two seconds here, as real ones take a while.
    let rig = Rig::hetzner_with(&["--action-seconds", "2"]);
    let crate::faults::Backend::Hetzner(h) = &rig.backend else {
        unreachable!()
    };
    success(rig.deploy(), "deploy");
    let old = rig.cloud();
    let old_tester = old
        .servers
        .iter()
        .find(|s| s.agent == "agent-tester")
        .unwrap()
        .id
        .clone();
    rig.set_changed(Some("agent-tester"));
    killed_by(&rig, &["deploy", "--yes"], |pid| {
        h.kill_after("DELETE", &format!("/servers/{old_tester}"), pid)
    });
    let st = h.state();
    let dying = st["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"].as_u64().map(|i| i.to_string()).as_deref() == Some(old_tester.as_str()))
        .expect("old server still listed");
    assert_eq!(dying["status"], "deleting");
    success(rig.deploy(), "deploy after a kill after DELETE /servers");
    rig.assert_converged(&rig.expected(Some("agent-tester")), "after DELETE");
    rig.assert_plan_clean("after DELETE");
}

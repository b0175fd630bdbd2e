//! The state lock, force-unlock, and interrupts.

use std::time::Duration;

use agent_army::lock::StateLock;

use crate::aws::{aws_env, client, live_instances};
use crate::support::servers::Moto;
use crate::support::{Project, state_json};

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_is_refused_naming_the_holder_or_waits() {
    let moto = Moto::start();
    let p = Project::example();
    let base = p.path().join(".agent-army");
    // Another "run" holds the lock (this process, through the library).
    let held = StateLock::acquire(&base, "prod", "deploy", "alice", Duration::ZERO).unwrap();
    let started = std::time::Instant::now();
    let out = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run();
    out.code(6)
        .stderr_has("error: the state of stack `prod` is locked by `deploy` by alice@")
        .stderr_has("force-unlock");
    assert!(started.elapsed() < Duration::from_secs(10), "fails at once");
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "destroy", "--yes"])
        .run()
        .code(6);
    assert!(
        moto.actions().iter().all(|a| a.starts_with("Describe")),
        "nothing done while locked"
    );

    // --lock-timeout waits for the holder to finish.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes", "--lock-timeout", "30s"])
        .run()
        .success();
    releaser.join().unwrap();
    assert_eq!(live_instances(&client(&moto).await, "prod").await.len(), 3);
}

/// `render --show-secrets` writes state when it creates gateway keys: it takes the lock like
/// deploy does (refused at once, or waits with --lock-timeout), and without a state change to
/// make it does not need the lock at all.
#[test]
fn render_show_secrets_takes_the_lock_when_it_writes_state() {
    let p = Project::example();
    let base = p.path().join(".agent-army");
    let render = |extra: &[&str]| {
        let mut args = vec!["-s", "dev", "render", "--out", "out", "--show-secrets"];
        args.extend_from_slice(extra);
        p.run().args(args).run()
    };
    let held = StateLock::acquire(&base, "dev", "deploy", "alice", Duration::ZERO).unwrap();
    let started = std::time::Instant::now();
    render(&[])
        .code(6)
        .stderr_has("error: the state of stack `dev` is locked by `deploy` by alice@")
        .stderr_has("--lock-timeout");
    assert!(started.elapsed() < Duration::from_secs(10), "fails at once");
    assert!(
        state_json(&p, "dev").is_none(),
        "no state written while locked"
    );
    assert!(
        !p.path().join("out").exists(),
        "nothing written while locked"
    );

    // --lock-timeout waits for the holder, then creates the keys and writes state.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        drop(held);
    });
    let started = std::time::Instant::now();
    render(&["--lock-timeout", "30s"]).success();
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "it waited"
    );
    releaser.join().unwrap();
    let st = state_json(&p, "dev").expect("state written");
    assert_eq!(st["serial"], 1);
    assert_eq!(st["gateway_keys"].as_object().unwrap().len(), 3);

    // Keys exist: nothing to write, so a held lock does not stand in the way.
    let held = StateLock::acquire(&base, "dev", "deploy", "bob", Duration::ZERO).unwrap();
    render(&[]).success();
    assert_eq!(
        state_json(&p, "dev").unwrap()["serial"],
        1,
        "state untouched"
    );
    drop(held);
}

#[test]
fn force_unlock_removes_a_stuck_lock_by_id_and_dead_holders_are_reported() {
    let p = Project::example();
    let base = p.path().join(".agent-army");
    let held = StateLock::acquire(&base, "dev", "destroy", "bob", Duration::ZERO).unwrap();
    let text = std::fs::read_to_string(&held.path).unwrap();
    let id = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    p.run()
        .args(["-s", "dev", "force-unlock", "not-the-id"])
        .run()
        .code(64)
        .stderr_has("does not match the lock");
    p.run()
        .args(["-s", "dev", "force-unlock", &id])
        .run()
        .success()
        .stderr_has("removed the lock of stack `dev` held by `destroy` by bob@");
    // A new run can take the lock although the stuck holder still has its old file.
    let again = StateLock::acquire(&base, "dev", "deploy", "carol", Duration::ZERO).unwrap();
    drop(again);
    drop(held);

    // A holder that died without cleaning up is reported and does not block.
    let dead = serde_json::json!({
        "id": "dead01", "operation": "deploy", "user": "dave", "host": "elsewhere",
        "pid": 4000000, "created": "2026-01-01T00:00:00Z"
    });
    std::fs::write(base.join("locks/dev.lock"), dead.to_string()).unwrap();
    let l = StateLock::acquire(&base, "dev", "deploy", "erin", Duration::ZERO).unwrap();
    assert_eq!(l.stale.as_ref().unwrap().pid, 4000000);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_new_work_saves_state_and_exits_130() {
    let moto = Moto::start();
    let p = Project::example();
    let child = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes", "--parallelism", "1"])
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !moto.actions().iter().any(|a| a == "RunInstances") {
        assert!(std::time::Instant::now() < deadline, "no RunInstances");
        std::thread::sleep(Duration::from_millis(10));
    }
    unsafe_kill(child.id(), 15);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupt: finishing calls in flight"),
        "{stderr}"
    );
    let created = moto
        .actions()
        .iter()
        .filter(|a| *a == "RunInstances")
        .count();
    assert!(
        created < 3,
        "no new work after the interrupt ({created} creates)"
    );
    // State records exactly what exists.
    let st = state_json(&p, "prod").unwrap();
    let c = client(&moto).await;
    for i in live_instances(&c, "prod").await {
        let recorded = &st["agents"][&i.agent];
        assert!(
            recorded["server_id"] == i.id.as_str() || recorded.get("pending_create").is_some(),
            "{} not tracked: {st}",
            i.id
        );
    }
    // The next run converges.
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run()
        .success();
    let agents: Vec<String> = live_instances(&c, "prod")
        .await
        .into_iter()
        .map(|i| i.agent)
        .collect();
    assert_eq!(agents, ["agent-eng", "agent-pm", "agent-tester"]);
}

fn unsafe_kill(pid: u32, sig: i32) {
    let st = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success());
}

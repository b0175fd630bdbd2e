//! State in S3 (moto's S3, which honours conditional writes): two runners with nothing
//! shared but the bucket, the lock under concurrency and after a kill, and lost updates.

use std::time::{Duration, Instant};

use agent_army::env::Env;
use agent_army::lock::LockError;
use agent_army::stack::ProviderKind;
use agent_army::stack::model::S3Location;
use agent_army::state::{S3Store, SharedS3, State, StateBackend, StateError};

use crate::aws::{aws_env, client, live_instances};
use crate::support::servers::Moto;
use crate::support::{Project, Run, gateway_tokens as tokens};

const BUCKET: &str = "acme-agent-army";
const SEED: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const STATE_KEY: &str = "ci/acme-agents/prod/state.json";
const LOCK_KEY: &str = "ci/acme-agents/prod/lock.json";

/// A runner: its own working copy (own HOME, identity, no `.agent-army/`), state in S3.
fn runner(moto: &Moto, in_file: bool) -> Project {
    let p = Project::example();
    let text = p.read("stacks/prod.toml");
    let mut text = format!("{text}gateway_seed = \"env:GATEWAY_SEED\"\n");
    if in_file {
        text.push_str(&format!(
            "\n[state]\nbackend = \"s3\"\nbucket = \"{BUCKET}\"\nprefix = \"ci\"\npath_style = true\n"
        ));
    }
    p.write("stacks/prod.toml", &text);
    let _ = moto;
    p
}

fn run(moto: &Moto, p: &Project, in_file: bool, args: &[&str]) -> Run {
    let mut a = vec!["-s", "prod"];
    a.extend_from_slice(args);
    let r = aws_env(p.run(), moto).env("GATEWAY_SEED", SEED).args(a);
    if in_file {
        r
    } else {
        r.env(
            "AGENT_ARMY_STATE",
            format!("s3://{BUCKET}/ci?region=us-east-1&path_style=true"),
        )
    }
}

fn s3_requests(moto: &Moto) -> Vec<String> {
    moto.requests()
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .is_some_and(|p| p.starts_with(&format!("/{BUCKET}/")))
        })
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["path"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runners_share_state_and_tokens_through_s3() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let a = runner(&moto, false);
    let b = runner(&moto, true);
    run(&moto, &a, false, &["deploy", "--yes"]).run().success();
    let from_a = tokens(
        run(
            &moto,
            &a,
            false,
            &["-o", "json", "outputs", "--show-secrets"],
        )
        .run()
        .success(),
    );
    assert!(
        moto.get_object(BUCKET, STATE_KEY).is_some(),
        "state is in the bucket"
    );
    assert!(moto.get_object(BUCKET, LOCK_KEY).is_none(), "lock released");
    assert!(
        !a.path().join(".agent-army/state").exists(),
        "no local state"
    );

    // Runner B: a different working copy; it finds the fleet through the bucket.
    moto.reset_log();
    let out = run(&moto, &b, true, &["deploy", "--yes"]).run();
    out.success();
    assert!(
        out.stdout
            .contains("No changes: the cloud matches the configuration (3 agents unchanged)"),
        "{}",
        out.stdout
    );
    let reqs = s3_requests(&moto);
    println!("S3 requests of a no-op deploy ({}):", reqs.len());
    for r in &reqs {
        println!("  {r}");
    }
    assert!(
        !moto
            .actions()
            .iter()
            .any(|x| x == "RunInstances" || x == "TerminateInstances"),
        "nothing changed"
    );
    let from_b = tokens(
        run(
            &moto,
            &b,
            true,
            &["-o", "json", "outputs", "--show-secrets"],
        )
        .run()
        .success(),
    );
    assert_eq!(from_b, from_a);
    assert_eq!(live_instances(&client(&moto).await, "prod").await.len(), 3);
    assert!(!b.path().join(".agent-army/state").exists());

    // `stacks` reads each stack's own backend: B sees the fleet in the bucket.
    let doc = run(&moto, &b, true, &["-o", "json", "stacks"])
        .run()
        .success()
        .json();
    let prod = crate::support::stack_row(&doc, "prod");
    assert_eq!(prod["deployed"], 3, "{prod}");
    assert_eq!(
        prod["state_location"],
        format!("s3://{BUCKET}/ci/acme-agents/prod/state.json")
    );
}

#[test]
fn concurrent_deploys_one_gets_the_lock_the_other_exits_6() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let (a, b) = (runner(&moto, false), runner(&moto, false));
    let spawn = |p: &Project| {
        run(&moto, p, false, &["deploy", "--yes"])
            .command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    let mut codes = [oa.status.code().unwrap(), ob.status.code().unwrap()];
    codes.sort();
    let loser = if oa.status.code() == Some(6) {
        &oa
    } else {
        &ob
    };
    let err = String::from_utf8_lossy(&loser.stderr);
    assert_eq!(
        codes,
        [0, 6],
        "first runner:\n{}\nsecond runner:\n{}",
        String::from_utf8_lossy(&oa.stderr),
        String::from_utf8_lossy(&ob.stderr)
    );
    assert!(err.contains("is locked by `deploy` by"), "{err}");
}

#[test]
fn a_killed_runner_leaves_a_stale_lock_that_is_named_and_force_unlocked() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let p = runner(&moto, false);
    let mut child = run(&moto, &p, false, &["deploy", "--yes", "--parallelism", "1"])
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !moto.actions().iter().any(|a| a == "RunInstances") {
        assert!(Instant::now() < deadline, "no RunInstances");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let lock: serde_json::Value =
        serde_json::from_str(&moto.get_object(BUCKET, LOCK_KEY).expect("lock left behind"))
            .unwrap();
    let id = lock["id"].as_str().unwrap().to_string();
    run(&moto, &p, false, &["deploy", "--yes"])
        .run()
        .code(6)
        .stderr_has("whose process is gone: the lock is stale")
        .stderr_has(&format!("force-unlock {id}"));
    run(&moto, &p, false, &["force-unlock", &id])
        .run()
        .success()
        .stderr_has("removed the lock of stack `prod`");
    assert!(moto.get_object(BUCKET, LOCK_KEY).is_none());
    run(&moto, &p, false, &["deploy", "--yes"]).run().success();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_with_a_stale_etag_is_refused() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let env = Env::from_pairs([("AWS_ENDPOINT_URL", moto.endpoint())]);
    let store = || {
        let loc = S3Location {
            bucket: BUCKET.into(),
            prefix: "ci".into(),
            region: "us-east-1".into(),
            path_style: true,
        };
        SharedS3::new(
            S3Store::new(loc, "acme-agents", "prod", &env).with_credentials("testing", "testing"),
        )
    };
    tokio::task::block_in_place(|| {
        let (one, two) = (store(), store());
        // Both runs see no state; the first writes it; the second's create-only write fails.
        assert!(one.read().unwrap().is_none());
        assert!(two.read().unwrap().is_none());
        let mut st = State::new("acme-agents", "prod", ProviderKind::Aws);
        let lock = one.lock("deploy", "a", Duration::ZERO).unwrap();
        assert!(matches!(
            two.lock("deploy", "b", Duration::ZERO),
            Err(LockError::Held(_))
        ));
        one.write(&lock, &mut st).unwrap();
        one.write(&lock, &mut st).unwrap();
        assert!(matches!(
            two.write(&lock, &mut st.clone()),
            Err(StateError::Conflict { .. })
        ));
        // After reading anew, the second writer's ETag is current: its write goes through,
        // and the first one's is now the stale one.
        assert_eq!(two.read().unwrap().unwrap().serial, 2);
        two.write(&lock, &mut st.clone()).unwrap();
        assert!(matches!(
            one.write(&lock, &mut st),
            Err(StateError::Conflict { .. })
        ));
        drop(lock);
        assert!(
            moto.get_object(BUCKET, LOCK_KEY).is_none(),
            "released on drop"
        );
        assert!(
            one.lock("deploy", "a", Duration::ZERO).is_ok(),
            "free again"
        );
    });
}

/// Local state moves to S3 and back, and the fleet stays the same fleet.
#[tokio::test(flavor = "multi_thread")]
async fn state_migrates_from_local_to_s3_and_back() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let p = runner(&moto, false);
    let s3 = format!("s3://{BUCKET}/ci?region=us-east-1&path_style=true");
    let local = |args: &[&str]| {
        let mut a = vec!["-s", "prod"];
        a.extend_from_slice(args);
        aws_env(p.run(), &moto)
            .env("GATEWAY_SEED", SEED)
            .env("AGENT_ARMY_STATE", "local")
            .args(a)
            .run()
    };
    local(&["deploy", "--yes"]).success();
    let serial = crate::support::state_json(&p, "prod").unwrap()["serial"]
        .as_u64()
        .unwrap();
    run(&moto, &p, false, &["state", "migrate", "--from", "local"])
        .run()
        .success()
        .stdout_has("copied the state of stack `prod`")
        .stdout_has(&format!("to s3://{BUCKET}/{STATE_KEY}"));
    let remote: serde_json::Value =
        serde_json::from_str(&moto.get_object(BUCKET, STATE_KEY).unwrap()).unwrap();
    assert_eq!(remote["serial"].as_u64(), Some(serial + 1));
    // Twice: the target holds state now, so it needs --force.
    run(&moto, &p, false, &["state", "migrate", "--from", "local"])
        .run()
        .code(3)
        .stderr_has("already holds state")
        .stderr_has("--force");
    let out = run(&moto, &p, false, &["deploy", "--yes"]).run();
    out.success();
    assert!(out.stdout.contains("No changes"), "{}", out.stdout);
    // And back.
    local(&["state", "migrate", "--from", &s3, "--force"])
        .success()
        .stdout_has("copied the state");
    let back = crate::support::state_json(&p, "prod").unwrap();
    assert_eq!(back["agents"], remote["agents"]);
    assert_eq!(live_instances(&client(&moto).await, "prod").await.len(), 3);
    local(&["state", "migrate", "--from", "local"])
        .code(64)
        .stderr_has("already in");
}

//! The sample GitHub Actions workflow (docs/ci/github-actions.yml) is executed, so it cannot
//! rot: every `run:` step of its jobs runs in order with bash, in a fresh checkout of an
//! example repository, against moto (EC2 and the S3 state bucket). GitHub's own parts are
//! stood in for: `$GITHUB_ENV` is honoured between steps, `$RUNNER_TEMP` is a temporary
//! folder, secrets come from the test, and the `install` step is replaced by the binary under
//! test on `PATH`. The only change to the workflow's values: path-style S3 addressing, since
//! the local endpoint has no bucket subdomains.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::aws::{client, live_instances};
use crate::support::servers::Moto;
use crate::support::{Project, bin};

fn workflow() -> Value {
    let text =
        std::fs::read_to_string(crate::support::repo().join("docs/ci/github-actions.yml")).unwrap();
    serde_saphyr::from_str(&text).expect("the workflow is YAML")
}

/// A fresh checkout of `repo`: its committed files only.
fn checkout(repo: &Project) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in crate::support::EXAMPLE_FILES {
        let dst = d.path().join(f);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(repo.path().join(f), dst).unwrap();
    }
    d
}

/// Run one job's `run:` steps in `dir`; returns each step's name and exit code.
fn run_job(job: &Value, dir: &Path, env: &BTreeMap<String, String>) -> Vec<(String, i32)> {
    let runner = tempfile::tempdir().unwrap();
    let github_env = runner.path().join("github_env");
    std::fs::write(&github_env, "").unwrap();
    let mut env = env.clone();
    env.insert("RUNNER_TEMP".into(), runner.path().display().to_string());
    env.insert("GITHUB_ENV".into(), github_env.display().to_string());
    env.insert("HOME".into(), runner.path().display().to_string());
    let mut done = Vec::new();
    for step in job["steps"].as_array().unwrap() {
        let Some(script) = step["run"].as_str() else {
            continue; // `uses:` steps (checkout): done by `checkout`
        };
        let name = step["name"].as_str().unwrap_or("?").to_string();
        if step["id"] == "install" {
            continue; // the binary under test is on PATH
        }
        let out = std::process::Command::new("bash")
            .args(["-e", "-o", "pipefail", "-c", script])
            .current_dir(dir)
            .env_clear()
            .envs(&env)
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        assert_eq!(
            code,
            0,
            "step `{name}` failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in std::fs::read_to_string(&github_env).unwrap().lines() {
            if let Some((k, v)) = line.split_once('=') {
                env.insert(k.into(), v.into());
            }
        }
        done.push((name, code));
    }
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_workflow_plans_deploys_and_a_fresh_runner_sees_no_change() {
    let moto = Moto::start();
    let wf = workflow();
    let wf_env = wf["env"].as_object().unwrap();
    let state_url = wf_env["AGENT_ARMY_STATE"].as_str().unwrap();
    let bucket = state_url
        .strip_prefix("s3://")
        .and_then(|r| r.split('/').next())
        .unwrap();
    moto.create_bucket(bucket);
    assert_eq!(wf["concurrency"]["cancel-in-progress"], false);
    // What the issue asks of the sample: plan on pull requests with --detailed-exitcode,
    // deploy on main, one concurrency group, remote state.
    assert!(wf["on"].get("pull_request").is_some());
    assert_eq!(wf["on"]["push"]["branches"][0], "main");
    assert!(wf["concurrency"]["group"].is_string());
    assert_eq!(
        wf["jobs"]["plan"]["if"],
        "github.event_name == 'pull_request'"
    );
    assert_eq!(wf["jobs"]["deploy"]["if"], "github.event_name == 'push'");
    assert!(
        serde_json::to_string(&wf["jobs"]["plan"])
            .unwrap()
            .contains("plan --detailed-exitcode")
    );
    assert!(state_url.starts_with("s3://"));

    // The repository: the example project with a committed gateway seed.
    let repo = Project::example();
    repo.run()
        .args(["-s", "prod", "secrets", "set", "gateway_seed", "--generate"])
        .run()
        .success();
    let age_key = std::fs::read_to_string(&repo.identity)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();

    // A runner's environment: the workflow's own values, the secrets it names, the tools.
    let tools = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(bin(), tools.path().join("agent-army")).unwrap();
    let mut env = BTreeMap::new();
    for (k, v) in wf_env {
        let v = v.as_str().unwrap();
        let value = if v.starts_with("${{") {
            match k.as_str() {
                "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => "testing".to_string(),
                "AGENT_ARMY_AGE_KEY" => age_key.clone(),
                "TS_AUTHKEY" => format!("tskey-auth-{}", "k".repeat(40)),
                "ANTHROPIC_API_KEY" => "sk-ant-test".to_string(),
                other => panic!("the workflow needs secret `{other}`, unknown to this test"),
            }
        } else if k == "AGENT_ARMY_STATE" {
            format!("{v}&path_style=true")
        } else {
            v.to_string()
        };
        env.insert(k.clone(), value);
    }
    env.insert(
        "PATH".into(),
        format!("{}:/usr/bin:/bin", tools.path().display()),
    );
    env.insert("AWS_ENDPOINT_URL".into(), moto.endpoint());
    env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
    env.insert("CI".into(), "true".into());

    // A pull request: plan (changes: exit 2, accepted by the step).
    let jobs = &wf["jobs"];
    let steps = run_job(&jobs["plan"], checkout(&repo).path(), &env);
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["age identity", "Validate", "Plan"]);
    assert!(
        live_instances(&client(&moto).await, "prod")
            .await
            .is_empty()
    );

    // main: deploy.
    let dir = checkout(&repo);
    run_job(&jobs["deploy"], dir.path(), &env);
    assert_eq!(live_instances(&client(&moto).await, "prod").await.len(), 3);
    let deployed: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("deploy.json")).unwrap())
            .unwrap();
    assert_eq!(deployed["agents"].as_array().unwrap().len(), 3);

    // The next pull request, on another fresh runner: no changes.
    let dir = checkout(&repo);
    run_job(&jobs["plan"], dir.path(), &env);
    let identity = dir.path().join("identity.txt");
    std::fs::write(&identity, format!("{age_key}\n")).unwrap();
    let out = std::process::Command::new(bin())
        .args(["plan", "--detailed-exitcode"])
        .current_dir(dir.path())
        .env_clear()
        .envs(&env)
        .env("HOME", dir.path())
        .env("AGENT_ARMY_IDENTITY", &identity)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

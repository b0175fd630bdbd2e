//! Fleet identity that survives the loss of local state (a fresh CI runner): gateway keys
//! derived from the stack's `gateway_seed`, key ids on every server, and adoption that checks
//! them. Against the Hetzner fake behind Prism and moto.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::aws::{aws_env, client, live_instances};
use crate::support::hetzner::Hetzner;
use crate::support::servers::Moto;
use crate::support::{Project, Run, gateway_tokens as tokens};

const SEED: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OTHER_SEED: &str = "11111111111111111111111111111111111111111111111111111111111111aa";

/// The example project, with `gateway_seed` read from `GATEWAY_SEED` in every stack.
fn seeded_project() -> Project {
    let p = Project::example();
    for stack in ["dev", "prod"] {
        let file = format!("stacks/{stack}.toml");
        let text = p.read(&file);
        assert!(
            text.trim_end().ends_with("\"env:ANTHROPIC_API_KEY\""),
            "[secrets] last"
        );
        p.write(
            &file,
            &format!("{text}gateway_seed = \"env:GATEWAY_SEED\"\n"),
        );
    }
    p
}

fn lose_local_state(p: &Project) {
    std::fs::remove_dir_all(p.path().join(".agent-army")).unwrap();
}

/// The lifecycle of one cloud: deploy; lose state; the same tokens and no change; a seed
/// that is not the fleet's gets replacements with the reason, never "no change".
fn survives_lost_state(
    env: &dyn Fn(Run) -> Run,
    stack: &str,
    p: &Project,
    key_ids: &dyn Fn() -> BTreeMap<String, String>,
    creates: &dyn Fn() -> usize,
) {
    let run = |seed: &str, args: &[&str]| {
        let mut a = vec!["-s", stack];
        a.extend_from_slice(args);
        env(p.run()).env("GATEWAY_SEED", seed).args(a).run()
    };
    run(SEED, &["deploy", "--yes"]).success();
    let first = tokens(run(SEED, &["-o", "json", "outputs", "--show-secrets"]).success());
    assert_eq!(first.len(), 3);
    for t in first.values() {
        assert_eq!(t.len(), 48);
    }
    let st = crate::support::state_json(p, stack).unwrap();
    assert!(
        st["gateway_keys"].as_object().is_none_or(|k| k.is_empty()),
        "derived keys are not stored: {}",
        st["gateway_keys"]
    );
    // Every server carries its key id, which is not the token nor part of it.
    let ids = key_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for (agent, id) in &ids {
        assert_eq!(id.len(), 16);
        assert!(!first[agent].contains(id.as_str()));
    }
    let created = creates();
    // The seed changed and nothing was deployed yet: the new tokens would open nothing, so
    // outputs shows none of them and says why.
    let stale = run(OTHER_SEED, &["-o", "json", "outputs", "--show-secrets"]);
    stale
        .success()
        .stderr_has("its gateway key changed since it was deployed (key id ")
        .stderr_has("run `agent-army deploy` to apply the new key");
    let doc = stale.json();
    assert_eq!(
        doc["stale_tokens"].as_array().map(Vec::len),
        Some(3),
        "{doc}"
    );
    for a in doc["agents"].as_array().unwrap() {
        let url = a["gateway_url"].as_str().unwrap();
        assert!(url.ends_with("#token=********"), "masked: {url}");
    }

    // A fresh runner: no local state at all.
    lose_local_state(p);
    let plan = run(SEED, &["plan"]);
    plan.success();
    let text = plan.stdout.clone();
    assert!(
        !text.contains("to create"),
        "plan searched the cloud:\n{text}"
    );
    run(SEED, &["deploy", "--yes"]).success();
    assert_eq!(creates(), created, "adopted, nothing created");
    let again = tokens(run(SEED, &["-o", "json", "outputs", "--show-secrets"]).success());
    assert_eq!(
        again, first,
        "the same tokens from a machine without the state"
    );

    // Another seed (a wrong secret, or another fleet's): never "no change".
    lose_local_state(p);
    let plan = run(OTHER_SEED, &["plan"]);
    plan.success()
        .stdout_has("its gateway key is not this stack's (key id ");
    run(OTHER_SEED, &["deploy", "--yes"]).success();
    assert_eq!(creates(), created + 3, "every agent replaced");
    let rotated = tokens(run(OTHER_SEED, &["-o", "json", "outputs", "--show-secrets"]).success());
    for (agent, t) in &rotated {
        assert_ne!(t, &first[agent]);
    }
    let new_ids = key_ids();
    for (agent, id) in &new_ids {
        assert_ne!(id, &ids[agent], "the new servers carry the new key ids");
    }
}

#[test]
fn hetzner_tokens_and_key_ids_survive_lost_state() {
    let h = Hetzner::start();
    let p = seeded_project();
    let dev_servers = |state: &Value| -> Vec<Value> {
        state["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["labels"]["agent-army/stack"] == "dev")
            .cloned()
            .collect()
    };
    let key_ids = || {
        dev_servers(&h.state())
            .iter()
            .filter(|s| s["status"] != "deleting")
            .map(|s| {
                (
                    s["labels"]["agent-army/agent"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    s["labels"]["agent-army/key-id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect()
    };
    let creates = || {
        h.requests()
            .iter()
            .filter(|r| r["method"] == "POST" && r["path"] == "/v1/servers")
            .count()
    };
    survives_lost_state(&|r| h.env(r), "dev", &p, &key_ids, &creates);
    h.assert_no_prism_errors();
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_tokens_and_key_ids_survive_lost_state() {
    let moto = Moto::start();
    let p = seeded_project();
    let c = client(&moto).await;
    let rt = tokio::runtime::Handle::current();
    let key_ids = || {
        let live = tokio::task::block_in_place(|| rt.block_on(live_instances(&c, "prod")));
        live.into_iter()
            .map(|i| {
                let id = i.tags.get("agent-army:key-id").cloned().unwrap_or_default();
                (i.agent, id)
            })
            .collect()
    };
    let creates = || {
        moto.actions()
            .iter()
            .filter(|a| *a == "RunInstances")
            .count()
    };
    tokio::task::block_in_place(|| {
        survives_lost_state(&|r| aws_env(r, &moto), "prod", &p, &key_ids, &creates)
    });
}

/// Without a seed, keys are random and live in state: losing state can no longer leave
/// `outputs` printing tokens that match nothing, because the servers are not adopted as
/// unchanged.
#[test]
fn without_a_seed_lost_state_replaces_instead_of_reporting_wrong_tokens() {
    let h = Hetzner::start();
    let p = Project::example();
    let deploy = || h.env(p.run()).args(["-s", "dev", "deploy", "--yes"]).run();
    deploy()
        .success()
        .stderr_has("secrets set gateway_seed --generate");
    lose_local_state(&p);
    let out = deploy();
    out.success();
    let text = out.stdout.clone();
    assert_eq!(
        text.matches("its gateway key is not this stack's").count(),
        3,
        "{text}"
    );
    assert!(!text.contains("adopt"), "{text}");
}

/// `token_generations` rotates one agent's token: that agent is replaced with the reason,
/// the others keep theirs. Without a seed the setting is refused, naming file and field.
#[test]
fn a_token_generation_rotates_one_agent() {
    let h = Hetzner::start();
    let p = seeded_project();
    let run = |args: &[&str]| {
        let mut a = vec!["-s", "dev"];
        a.extend_from_slice(args);
        h.env(p.run()).env("GATEWAY_SEED", SEED).args(a).run()
    };
    run(&["deploy", "--yes"]).success();
    let before = tokens(run(&["-o", "json", "outputs", "--show-secrets"]).success());
    let text = p.read("stacks/dev.toml");
    p.write(
        "stacks/dev.toml",
        &format!("token_generations = {{ agent-pm = 1 }}\n{text}"),
    );
    let plan = run(&["plan"]);
    plan.success()
        .stdout_has("gateway token rotated (generation 0 → 1)");
    assert_eq!(plan.stdout.matches("-/+").count(), 1, "{}", plan.stdout);
    run(&["deploy", "--yes"]).success();
    let after = tokens(run(&["-o", "json", "outputs", "--show-secrets"]).success());
    assert_ne!(after["agent-pm"], before["agent-pm"]);
    assert_eq!(after["agent-eng"], before["agent-eng"]);
    assert_eq!(after["agent-tester"], before["agent-tester"]);

    // Without a seed: a clear error, nothing touched.
    let q = Project::example();
    let text = q.read("stacks/dev.toml");
    q.write(
        "stacks/dev.toml",
        &format!("token_generations = {{ agent-pm = 1 }}\n{text}"),
    );
    q.run()
        .args(["-s", "dev", "validate"])
        .run()
        .code(3)
        .stderr_has("stacks/dev.toml:1")
        .stderr_has("token generations need the stack's `gateway_seed` secret")
        .stderr_has("secrets set gateway_seed --generate");
}

/// Keys encrypted only for recipients nobody here holds would be unrecoverable: deploy
/// refuses before touching the cloud, unless told to go ahead.
#[test]
fn deploy_refuses_keys_it_could_never_read_back() {
    let h = Hetzner::start();
    let p = Project::example();
    let text = p.read("stacks/dev.toml").replace(
        &p.public_key,
        "age16jcxy2zfs8745hxn2gslqdat6vr87886ruq4k9hpffz5vg8fqswqfpepg0",
    );
    p.write("stacks/dev.toml", &text);
    let deploy = |extra: &[&str]| {
        let mut a = vec!["-s", "dev", "deploy", "--yes"];
        a.extend_from_slice(extra);
        h.env(p.run()).args(a).run()
    };
    deploy(&[])
        .code(4)
        .stderr_has("holds no identity for any of the stack's `age_recipients`")
        .stderr_has("--allow-foreign-recipients");
    assert!(
        !h.requests().iter().any(|r| r["method"] != "GET"),
        "nothing touched in the cloud"
    );
    assert!(
        crate::support::state_json(&p, "dev").is_none(),
        "no state written"
    );
    deploy(&["--allow-foreign-recipients"]).success();
}

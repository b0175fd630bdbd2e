//! One conformance suite for the `Provider` trait, run against every implementation: the
//! in-memory cloud the engine's unit tests use, AWS against moto, and Hetzner against the
//! Hetzner fake behind Prism. Every step is checked by describing the stack back through
//! `observe()` (an emulator may answer a create leniently; what counts is what it then lists).

use std::time::{Duration, Instant};

use agent_army::provider::aws::AwsProvider;
use agent_army::provider::hetzner::HetznerProvider;
use agent_army::provider::memory::MemoryCloud;
use agent_army::provider::{
    NetworkSpec, Observed, ObservedNetwork, ObservedServer, Provider, ServerSpec, ServerState,
    StackId,
};
use agent_army::secrets::Secret;

use crate::support::hetzner::Hetzner;
use crate::support::servers::Moto;

const POLL: Duration = Duration::from_millis(50);
const PROJECT: &str = "conformance";
/// A break-glass key for the providers that take one (Hetzner).
const SSH_PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDQO+Aue/E7L5zi8mwMqXZd7Bp5949KPiFrbcEla1kUA conformance";

/// What a second `create_server` with the same spec and client token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Returns the server the first call made; no second server exists.
    SameServer,
    /// May launch a second server (the endpoint ignores the client token); every server
    /// returned is then listed by `observe` under the agent, so the next plan sees the
    /// duplicate and removes it.
    MayDuplicate,
}

/// The provider-specific inputs of the suite.
struct Fixture {
    instance_type: &'static str,
    ssh_public_key: Option<&'static str>,
    retry: Retry,
}

fn stack_id(stack: &str) -> StackId {
    StackId {
        project: PROJECT.into(),
        stack: stack.into(),
    }
}

fn network(cidrs: &[&str], fx: &Fixture) -> NetworkSpec {
    NetworkSpec {
        ssh_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
        ssh_public_key: fx.ssh_public_key.map(str::to_string),
    }
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn want(cidrs: &[&str]) -> Vec<String> {
    sorted(&cidrs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

/// The servers `observe` counts: listed and not terminated / being terminated.
fn live(o: &Observed) -> Vec<&ObservedServer> {
    o.servers.iter().filter(|s| !s.state.is_gone()).collect()
}

async fn observe<P: Provider>(p: &P, step: &str) -> Observed {
    p.observe()
        .await
        .unwrap_or_else(|e| panic!("{step}: observe failed: {e}"))
}

/// The stack's only network, with its CIDRs sorted.
#[track_caller]
fn only_network<'a>(o: &'a Observed, id: &str, step: &str) -> &'a ObservedNetwork {
    assert_eq!(o.networks.len(), 1, "{step}: one network: {o:#?}");
    let n = &o.networks[0];
    assert_eq!(n.id, id, "{step}: the network created");
    n
}

/// The suite. `p` and `other` are two stacks of the same project on the same cloud; both start
/// empty, and everything the suite makes is deleted again. `user_data` reads back the user
/// data the cloud holds for a server (`None`: the cloud does not say).
async fn conformance<P: Provider>(
    p: &P,
    other: &P,
    fx: &Fixture,
    user_data: impl AsyncFn(&str) -> Option<Vec<u8>>,
) {
    // An empty stack observes nothing.
    let o = observe(p, "empty stack").await;
    assert!(
        o.servers.is_empty() && o.networks.is_empty(),
        "empty stack: {o:#?}"
    );

    // create_network: observe finds it; no CIDRs means no inbound rule at all.
    let net = p
        .create_network(&network(&[], fx))
        .await
        .expect("create_network");
    let o = observe(p, "after create_network").await;
    let n = only_network(&o, &net.id, "after create_network");
    assert!(n.ssh_cidrs.is_empty(), "no inbound rules: {n:#?}");
    assert!(o.servers.is_empty(), "no servers yet: {o:#?}");

    // update_network makes the rules exactly the CIDRs given (v4 and v6), replacing the old
    // ones, and back to none.
    for cidrs in [
        &["203.0.113.0/24", "2001:db8::/32"][..],
        &["198.51.100.7/32"][..],
        &[][..],
    ] {
        p.update_network(&net.id, &network(cidrs, fx))
            .await
            .unwrap_or_else(|e| panic!("update_network {cidrs:?}: {e}"));
        let o = observe(p, "after update_network").await;
        let n = only_network(&o, &net.id, "after update_network");
        assert_eq!(sorted(&n.ssh_cidrs), want(cidrs), "rules after update");
    }

    // create_server: exactly one server for the agent, with its tags, running once waited for.
    let user = b"#cloud-config\n# conformance\nhostname: conf-alpha\n".to_vec();
    let spec = ServerSpec {
        agent: "alpha".into(),
        hostname: "conf-alpha".into(),
        instance_type: fx.instance_type.into(),
        image: None,
        disk_gb: 20,
        user_data: user.clone(),
        fingerprint: "fp-alpha-1".into(),
        key_id: "key-alpha-1".into(),
        client_token: "conformance-token-alpha-1".into(),
        network_id: net.id.clone(),
        ssh_key_id: None,
    };
    let id = p.create_server(&spec).await.expect("create_server");
    let o = observe(p, "after create_server").await;
    let servers = live(&o);
    assert_eq!(servers.len(), 1, "one server: {o:#?}");
    let s = servers[0];
    assert_eq!(s.id, id, "the server created");
    assert_eq!(s.agent, "alpha");
    assert_eq!(s.fingerprint.as_deref(), Some("fp-alpha-1"));
    assert_eq!(s.key_id.as_deref(), Some("key-alpha-1"));
    assert_eq!(s.name, "conf-alpha");
    assert!(
        matches!(s.state, ServerState::Pending | ServerState::Running),
        "a new server is pending or running: {s:#?}"
    );
    if let Some(ud) = user_data(&id).await {
        assert_eq!(
            String::from_utf8_lossy(&ud),
            String::from_utf8_lossy(&user),
            "user data"
        );
    }
    p.wait_running(&id).await.expect("wait_running");
    let o = observe(p, "after wait_running").await;
    let servers = live(&o);
    assert_eq!(servers.len(), 1, "one server: {o:#?}");
    assert_eq!(servers[0].state, ServerState::Running, "{o:#?}");

    // The same create again (a retry after a lost answer).
    let again = p.create_server(&spec).await.expect("retried create_server");
    let o = observe(p, "after the retried create").await;
    let ids: Vec<&str> = live(&o)
        .iter()
        .filter(|s| s.agent == "alpha")
        .map(|s| s.id.as_str())
        .collect();
    match fx.retry {
        Retry::SameServer => {
            assert_eq!(again, id, "a retried create returns the first server");
            assert_eq!(ids, [id.as_str()], "no second server: {o:#?}");
        }
        Retry::MayDuplicate => {
            // Whatever came back, nothing is invisible: both ids are listed for the agent
            // with its tags, which is all the plan needs to find and remove a duplicate.
            for want in [&id, &again] {
                assert!(ids.contains(&want.as_str()), "{want} observed: {o:#?}");
            }
            if again != id {
                let dup = live(&o).into_iter().find(|s| s.id == again).unwrap();
                assert_eq!(dup.fingerprint.as_deref(), Some("fp-alpha-1"), "{dup:#?}");
                p.delete_server(&again).await.expect("delete the duplicate");
                p.wait_deleted(std::slice::from_ref(&again))
                    .await
                    .expect("wait for the duplicate");
            }
        }
    }

    // Another stack of the same project: it sees only its own, and so does this one. Same
    // agent name, no key id (a server made before key ids), rules from the create.
    // (No break-glass key: Hetzner refuses a second key with the same fingerprint.)
    let onet = other
        .create_network(&NetworkSpec {
            ssh_public_key: None,
            ..network(&["192.0.2.0/24"], fx)
        })
        .await
        .expect("other stack: create_network");
    let ospec = ServerSpec {
        hostname: "conf-other-alpha".into(),
        fingerprint: "fp-other".into(),
        key_id: String::new(),
        client_token: "conformance-token-other-1".into(),
        network_id: onet.id.clone(),
        ..spec.clone()
    };
    let oid = other
        .create_server(&ospec)
        .await
        .expect("other stack: create_server");
    other
        .wait_running(&oid)
        .await
        .expect("other stack: wait_running");
    let oo = observe(other, "other stack").await;
    let n = only_network(&oo, &onet.id, "other stack");
    assert_eq!(
        sorted(&n.ssh_cidrs),
        want(&["192.0.2.0/24"]),
        "rules from create"
    );
    let oservers = live(&oo);
    assert_eq!(oservers.len(), 1, "other stack: its one server: {oo:#?}");
    assert_eq!(oservers[0].id, oid);
    assert_eq!(oservers[0].fingerprint.as_deref(), Some("fp-other"));
    // A server created without a key id reports none, on every cloud.
    assert_eq!(oservers[0].key_id, None, "no key id: {oo:#?}");
    let o = observe(p, "beside another stack").await;
    only_network(&o, &net.id, "beside another stack");
    let ids: Vec<&str> = live(&o).iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [id.as_str()], "only this stack's server: {o:#?}");
    other
        .delete_server(&oid)
        .await
        .expect("other: delete_server");
    other
        .wait_deleted(std::slice::from_ref(&oid))
        .await
        .expect("other: wait_deleted");
    other
        .delete_network(&onet)
        .await
        .expect("other: delete_network");
    let oo = observe(other, "other stack, deleted").await;
    assert!(
        live(&oo).is_empty() && oo.networks.is_empty(),
        "other stack left something: {oo:#?}"
    );

    // delete_server + wait_deleted: observe no longer counts it.
    p.delete_server(&id).await.expect("delete_server");
    p.wait_deleted(std::slice::from_ref(&id))
        .await
        .expect("wait_deleted");
    let o = observe(p, "after wait_deleted").await;
    assert!(live(&o).is_empty(), "the server still counts: {o:#?}");

    // Deleting it again succeeds, and so does waiting for it.
    p.delete_server(&id).await.expect("delete a deleted server");
    p.wait_deleted(std::slice::from_ref(&id))
        .await
        .expect("wait for a deleted server");

    // delete_network leaves nothing; deleting it again succeeds.
    p.delete_network(&net).await.expect("delete_network");
    let o = observe(p, "after delete_network").await;
    assert!(
        live(&o).is_empty() && o.networks.is_empty(),
        "left behind: {o:#?}"
    );
    p.delete_network(&net)
        .await
        .expect("delete a deleted network");
}

#[tokio::test]
async fn conformance_memory() {
    let started = Instant::now();
    let cloud = MemoryCloud::new();
    let other = cloud.stack("other");
    let fx = Fixture {
        instance_type: "any",
        ssh_public_key: None,
        retry: Retry::SameServer,
    };
    conformance(&cloud, &other, &fx, async |id: &str| {
        cloud.spec(id).map(|s| s.user_data)
    })
    .await;
    eprintln!("memory: {:?}", started.elapsed());
}

#[tokio::test]
async fn conformance_aws_moto() {
    let started = Instant::now();
    let moto = Moto::start();
    // The endpoint and credentials go to the SDK's loader, not the process environment.
    let aws = async |stack: &str| {
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-central-1"))
            .endpoint_url(moto.direct())
            .credentials_provider(aws_sdk_ec2::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ));
        AwsProvider::with_loader(loader, stack_id(stack), None, 2, POLL, None).await
    };
    let (p, other) = (aws("prod").await, aws("other").await);
    let client = crate::aws::client(&moto).await;
    let fx = Fixture {
        instance_type: "t3.small",
        ssh_public_key: None,
        // moto 5 records RunInstances' ClientToken but does not deduplicate on it (EC2 does:
        // the same token returns the first instance). The provider only looks an instance up
        // by its tags before retrying after an unknown outcome (see `faults.rs`), not before
        // every call, so a completed create repeated by hand launches a second one here.
        retry: Retry::MayDuplicate,
    };
    conformance(&p, &other, &fx, async |id: &str| {
        Some(crate::aws::user_data(&client, id).await.into_bytes())
    })
    .await;
    eprintln!("aws (moto): {:?}", started.elapsed());
}

#[tokio::test]
async fn conformance_hetzner_prism() {
    let started = Instant::now();
    let h = Hetzner::start();
    let hetzner = |stack: &str| {
        HetznerProvider::new(
            &h.endpoint(),
            Secret::new("test-token"),
            stack_id(stack),
            "fsn1".into(),
            POLL,
            None,
        )
        .expect("hetzner provider")
    };
    let (p, other) = (hetzner("prod"), hetzner("other"));
    let fx = Fixture {
        instance_type: "cx22",
        ssh_public_key: Some(SSH_PUBLIC_KEY),
        // Hetzner has no client token: server names are unique per project, and a create
        // refused for a name held by this agent's server with the same fingerprint returns
        // that server. The suite's retry repeats the spec, name included.
        retry: Retry::SameServer,
    };
    conformance(&p, &other, &fx, async |id: &str| {
        h.state()["server_inputs"][id]["user_data"]
            .as_str()
            .map(|s| s.as_bytes().to_vec())
    })
    .await;
    // The break-glass keys went with the stacks' last firewalls.
    let state = h.state();
    assert_eq!(state["ssh_keys"], serde_json::json!([]), "{state:#}");
    assert_eq!(state["servers"], serde_json::json!([]), "{state:#}");
    h.assert_no_prism_errors();
    eprintln!("hetzner (prism): {:?}", started.elapsed());
}

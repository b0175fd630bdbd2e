//! AWS lifecycle against moto_server, asserted by describing resources back through EC2.

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use base64::Engine as _;

use crate::support::servers::Moto;
use crate::support::{Project, Run, state_json};

const REGION: &str = "eu-central-1";

pub(crate) fn aws_env(run: Run, moto: &Moto) -> Run {
    run.env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

pub(crate) async fn client(moto: &Moto) -> Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(moto.direct())
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    Client::new(&conf)
}

/// An instance's user data, described back through EC2 and decoded; gunzipped when agent-army
/// gzipped it to fit AWS's 16 KiB limit (cloud-init detects gzip the same way: by its magic).
pub(crate) async fn user_data(c: &Client, id: &str) -> String {
    let ud = c
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(ud.user_data().unwrap().value().unwrap())
        .unwrap();
    let raw = if raw.starts_with(&[0x1f, 0x8b]) {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .expect("gzipped user data");
        out
    } else {
        raw
    };
    String::from_utf8(raw).expect("user data is UTF-8")
}

pub(crate) struct Instance {
    pub id: String,
    pub agent: String,
    pub instance_type: String,
    pub tags: std::collections::BTreeMap<String, String>,
}

pub(crate) async fn live_instances(c: &Client, stack: &str) -> Vec<Instance> {
    let out = c
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:agent-army:stack")
                .values(stack)
                .build(),
        )
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut v = Vec::new();
    for r in out.reservations() {
        for i in r.instances() {
            let tags: std::collections::BTreeMap<String, String> = i
                .tags()
                .iter()
                .map(|t| (t.key().unwrap().to_string(), t.value().unwrap().to_string()))
                .collect();
            v.push(Instance {
                id: i.instance_id().unwrap().to_string(),
                agent: tags.get("agent-army:agent").cloned().unwrap_or_default(),
                instance_type: i.instance_type().unwrap().as_str().to_string(),
                tags,
            });
        }
    }
    v.sort_by(|a, b| a.agent.cmp(&b.agent));
    v
}

async fn stack_security_groups(c: &Client, stack: &str) -> Vec<aws_sdk_ec2::types::SecurityGroup> {
    c.describe_security_groups()
        .filters(
            Filter::builder()
                .name("tag:agent-army:stack")
                .values(stack)
                .build(),
        )
        .send()
        .await
        .unwrap()
        .security_groups()
        .to_vec()
}

pub(crate) fn mutating(actions: &[String]) -> Vec<String> {
    actions
        .iter()
        .filter(|a| {
            a.starts_with("Run")
                || a.starts_with("Terminate")
                || a.starts_with("Create")
                || a.starts_with("Delete")
                || a.starts_with("Authorize")
                || a.starts_with("Revoke")
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_lifecycle_deploy_redeploy_change_destroy() {
    let moto = Moto::start();
    let p = Project::example();
    let c = client(&moto).await;

    // 1. Deploy the three example agents.
    let out = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run();
    out.success().stdout_has("prod-agent-pm.tail12345.ts.net");
    assert!(
        out.stdout.contains("token=********"),
        "token masked:\n{}",
        out.stdout
    );

    let instances = live_instances(&c, "prod").await;
    assert_eq!(
        instances
            .iter()
            .map(|i| i.agent.as_str())
            .collect::<Vec<_>>(),
        ["agent-eng", "agent-pm", "agent-tester"]
    );
    // Security group: zero ingress, only the default all-egress rule.
    let sgs = stack_security_groups(&c, "prod").await;
    assert_eq!(sgs.len(), 1);
    let sg = &sgs[0];
    assert!(
        sg.ip_permissions().is_empty(),
        "ingress must be empty: {:?}",
        sg.ip_permissions()
    );
    assert_eq!(sg.ip_permissions_egress().len(), 1);
    let sg_tags: Vec<_> = sg.tags().iter().map(|t| t.key().unwrap()).collect();
    for k in ["agent-army:project", "agent-army:stack", "Name"] {
        assert!(
            sg_tags.contains(&k),
            "security group tag {k} missing: {sg_tags:?}"
        );
    }

    for inst in &instances {
        // Tags.
        assert_eq!(inst.tags["agent-army:project"], "acme-agents");
        assert_eq!(inst.tags["agent-army:stack"], "prod");
        assert_eq!(inst.tags["Name"], format!("prod-{}", inst.agent));
        assert_eq!(inst.instance_type, "t3.medium");
        let d = c
            .describe_instances()
            .instance_ids(&inst.id)
            .send()
            .await
            .unwrap();
        let i = &d.reservations()[0].instances()[0];
        // IMDSv2 required, hop limit 1.
        let md = i.metadata_options().unwrap();
        assert_eq!(md.http_tokens().unwrap().as_str(), "required");
        assert_eq!(md.http_put_response_hop_limit(), Some(1));
        assert_eq!(md.http_endpoint().unwrap().as_str(), "enabled");
        // Newest Canonical noble image.
        assert_eq!(i.image_id(), Some("ami-0a1b2c3d4e5f60002"));
        assert_eq!(i.security_groups()[0].group_id(), sg.group_id());
        // Root volume: tagged, gp3, configured size.
        let vol_id = i.block_device_mappings()[0]
            .ebs()
            .unwrap()
            .volume_id()
            .unwrap();
        let vols = c
            .describe_volumes()
            .volume_ids(vol_id)
            .send()
            .await
            .unwrap();
        let vol = &vols.volumes()[0];
        assert_eq!(vol.volume_type().unwrap().as_str(), "gp3");
        let want_gb = if inst.agent == "agent-eng" { 60 } else { 30 };
        assert_eq!(vol.size(), Some(want_gb));
        let vtags: std::collections::BTreeMap<_, _> = vol
            .tags()
            .iter()
            .map(|t| (t.key().unwrap(), t.value().unwrap()))
            .collect();
        assert_eq!(vtags.get("agent-army:agent"), Some(&inst.agent.as_str()));
        assert_eq!(vtags.get("agent-army:stack"), Some(&"prod"));
        // User data decodes to the rendered cloud-init with the right hostname.
        let text = user_data(&c, &inst.id).await;
        assert!(text.starts_with("#cloud-config\n"));
        assert!(text.contains(&format!("--hostname=prod-{}", inst.agent)));
        if inst.agent == "agent-pm" {
            println!(
                "describe-back of agent-pm: id={} type={} image={:?} imds={:?} volume={}GB {:?} tags={:?} user-data {} bytes",
                inst.id,
                inst.instance_type,
                i.image_id(),
                md,
                want_gb,
                vol.volume_type(),
                inst.tags,
                text.len()
            );
        }
    }
    let st = state_json(&p, "prod").unwrap();
    assert_eq!(st["version"], 1);
    for inst in &instances {
        assert_eq!(st["agents"][&inst.agent]["server_id"], inst.id.as_str());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p.path().join(".agent-army/state/prod.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    p.assert_nowhere_on_disk(crate::support::TS_SENTINEL);
    p.assert_nowhere_on_disk(crate::support::API_SENTINEL);

    // 2. Unchanged redeploy: no mutating call at all.
    moto.reset_log();
    let out = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run();
    out.success().stdout_has("No changes");
    let actions = moto.actions();
    assert!(
        mutating(&actions).is_empty(),
        "unchanged redeploy made mutating calls: {actions:?}"
    );
    assert!(actions.iter().any(|a| a == "DescribeInstances"));

    // 3. Change one agent's instance type: only that agent is replaced.
    p.write(
        "agent-army.toml",
        &p.read("agent-army.toml").replace(
            "name = \"agent-tester\"\n",
            "name = \"agent-tester\"\ninstance_type = \"t3.large\"\n",
        ),
    );
    moto.reset_log();
    let plan = aws_env(p.run(), &moto)
        .args(["-s", "prod", "plan", "--detailed-exitcode"])
        .run();
    plan.code(2)
        .stdout_has("-/+ agent-tester")
        .stdout_has("instance type t3.medium → t3.large");
    let out = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run();
    out.success();
    let actions = moto.actions();
    assert_eq!(
        actions.iter().filter(|a| *a == "RunInstances").count(),
        1,
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "TerminateInstances")
            .count(),
        1,
        "{actions:?}"
    );
    let after = live_instances(&c, "prod").await;
    assert_eq!(after.len(), 3);
    for (b, a) in instances.iter().zip(&after) {
        if a.agent == "agent-tester" {
            assert_ne!(a.id, b.id);
            assert_eq!(a.instance_type, "t3.large");
        } else {
            assert_eq!(a.id, b.id, "{} must not be touched", a.agent);
        }
    }

    // 4. Remove one agent, add another.
    let project = p.read("agent-army.toml");
    let without_pm = project.replace(
        "[[agents]]\nname = \"agent-pm\"\nrole = \"Product manager: turns requests into specs and tickets\"\nworkspace = \"agents/pm\"\n",
        "[[agents]]\nname = \"agent-ops\"\nrole = \"Operations\"\n",
    );
    assert_ne!(project, without_pm);
    p.write("agent-army.toml", &without_pm);
    let out = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run();
    out.success();
    let agents: Vec<String> = live_instances(&c, "prod")
        .await
        .into_iter()
        .map(|i| i.agent)
        .collect();
    assert_eq!(agents, ["agent-eng", "agent-ops", "agent-tester"]);

    // 5. Destroy: zero instances and zero security groups tagged with the stack.
    let out = aws_env(p.run(), &moto)
        .args(["-s", "prod", "destroy", "--yes"])
        .run();
    out.success().stdout_has("Destroyed 3 server(s)");
    assert!(live_instances(&c, "prod").await.is_empty());
    assert!(stack_security_groups(&c, "prod").await.is_empty());
    assert!(state_json(&p, "prod").is_none(), "state cleared");
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_killed_right_after_run_instances_converges_without_duplicates() {
    let moto = Moto::start();
    let p = Project::example();
    let c = client(&moto).await;
    let child = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes", "--parallelism", "1"])
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    moto.kill_after("RunInstances", child.id());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed by a signal");
    // The instance the killed run launched is tagged, and state holds the intent.
    let orphans = live_instances(&c, "prod").await;
    assert_eq!(orphans.len(), 1);
    let st = state_json(&p, "prod").unwrap();
    let pending: Vec<_> = st["agents"]
        .as_object()
        .unwrap()
        .values()
        .filter(|a| a.get("pending_create").is_some())
        .collect();
    assert_eq!(pending.len(), 1, "intent recorded before the call: {st}");

    let plan = aws_env(p.run(), &moto).args(["-s", "prod", "plan"]).run();
    plan.success()
        .stdout_has(&format!("adopt {}", orphans[0].id))
        .stdout_has("Plan: 2 to create");
    moto.reset_log();
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run()
        .success();
    let actions = moto.actions();
    assert_eq!(
        actions.iter().filter(|a| *a == "RunInstances").count(),
        2,
        "{actions:?}"
    );
    let after = live_instances(&c, "prod").await;
    assert_eq!(
        after.iter().map(|i| i.agent.as_str()).collect::<Vec<_>>(),
        ["agent-eng", "agent-pm", "agent-tester"],
        "exactly one instance per agent"
    );
    assert!(
        after.iter().any(|i| i.id == orphans[0].id),
        "the orphan was adopted"
    );
    let st = state_json(&p, "prod").unwrap();
    for i in &after {
        assert_eq!(st["agents"][&i.agent]["server_id"], i.id.as_str());
        assert!(st["agents"][&i.agent].get("pending_create").is_none());
    }
    // A redeploy after convergence is a no-op, and plan says so with exit code 0.
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "plan", "--detailed-exitcode"])
        .run()
        .code(0)
        .stdout_has("No changes");
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_one_failing_agent_does_not_stop_the_others() {
    let moto = Moto::start();
    let p = Project::example();
    let c = client(&moto).await;
    // `c1.medium` exists (so the check before any create passes) but is not offered in
    // eu-central-1, which moto's RunInstances refuses, as EC2 does: only that agent fails.
    p.write(
        "agent-army.toml",
        &p.read("agent-army.toml").replace(
            "name = \"agent-tester\"\n",
            "name = \"agent-tester\"\ninstance_type = \"c1.medium\"\n",
        ),
    );
    let out = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run();
    out.code(1)
        .stderr_has("agent-tester: InvalidInstanceType")
        .stdout_has("failed (InvalidInstanceType.NotFound)");
    let agents: Vec<String> = live_instances(&c, "prod")
        .await
        .into_iter()
        .map(|i| i.agent)
        .collect();
    assert_eq!(agents, ["agent-eng", "agent-pm"]);
    let st = state_json(&p, "prod").unwrap();
    assert!(st["agents"]["agent-pm"]["server_id"].is_string());
    assert!(st["agents"]["agent-tester"].get("server_id").is_none());
    assert!(st["agents"]["agent-tester"].get("pending_create").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_unconfirmed_or_declined_changes_nothing() {
    let moto = Moto::start();
    let p = Project::example();
    let c = client(&moto).await;
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy"])
        .run()
        .code(5)
        .stderr_has("pass --yes");
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "destroy"])
        .run()
        .success()
        .stdout_has("Nothing to destroy");
    let actions = moto.actions();
    assert!(mutating(&actions).is_empty(), "{actions:?}");
    assert!(live_instances(&c, "prod").await.is_empty());
    // Errors under --detailed-exitcode exit 1, whatever their usual code (here: a bad file).
    p.write(
        "stacks/prod.toml",
        &p.read("stacks/prod.toml").replace("region", "regoin"),
    );
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "plan", "--detailed-exitcode"])
        .run()
        .code(1)
        .stderr_has("unknown key `regoin`");
}

/// A Graviton type gets the arm64 Ubuntu AMI (EC2 refuses an amd64 image on it; moto does
/// not, so the image is described back); the others keep amd64. An instance type EC2 does not
/// know is refused before anything is created.
#[tokio::test(flavor = "multi_thread")]
async fn aws_arm_types_get_arm_images_and_unknown_types_fail_first() {
    let moto = Moto::start();
    let p = Project::example();
    let project = p.read("agent-army.toml");
    let tester = "name = \"agent-tester\"\n";
    assert!(project.contains(tester));
    p.write(
        "agent-army.toml",
        &project.replace(tester, &format!("{tester}instance_type = \"t4g.small\"\n")),
    );
    let plan = aws_env(p.run(), &moto).args(["-s", "prod", "plan"]).run();
    plan.success()
        .stdout_has("t4g.small, ubuntu-24.04 arm64 (newest Canonical AMI)")
        .stdout_has("t3.medium, ubuntu-24.04 (newest Canonical AMI)");
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run()
        .success();
    let c = client(&moto).await;
    let out = c
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:agent-army:stack")
                .values("prod")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let mut images = std::collections::BTreeMap::new();
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let agent = i
            .tags()
            .iter()
            .find(|t| t.key() == Some("agent-army:agent"))
            .and_then(|t| t.value())
            .unwrap()
            .to_string();
        images.insert(agent, i.image_id().unwrap().to_string());
    }
    assert_eq!(
        images["agent-tester"], "ami-0a1b2c3d4e5f60004",
        "arm64: {images:?}"
    );
    assert_eq!(
        images["agent-pm"], "ami-0a1b2c3d4e5f60002",
        "amd64: {images:?}"
    );
    assert_eq!(
        images["agent-eng"], "ami-0a1b2c3d4e5f60002",
        "amd64: {images:?}"
    );

    // An instance type EC2 does not know: refused before any create, on a fresh stack.
    let q = Project::example();
    q.write(
        "stacks/prod.toml",
        &q.read("stacks/prod.toml").replace(
            "instance_type = \"t3.medium\"",
            "instance_type = \"t3.gigantic\"",
        ),
    );
    moto.reset_log();
    let out = aws_env(q.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run();
    assert_ne!(out.code, 0, "{}", out.stderr);
    out.stderr_has("t3.gigantic");
    let actions = moto.actions();
    assert!(
        !actions
            .iter()
            .any(|a| a.starts_with("Create") || a == "RunInstances"),
        "nothing created: {actions:?}"
    );
}

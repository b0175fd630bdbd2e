//! `status` and `ssh` against a fleet deployed on the Hetzner fake (the AWS fleet is covered in
//! ssh_status.rs). The stack is named `prod` so the shared tailnet fixtures match its hosts.

use crate::ssh_status::{FakeTailscale, Gateway};
use crate::support::hetzner::Hetzner;
use crate::support::{Project, state_json};

#[test]
fn status_and_ssh_work_against_a_hetzner_fleet() {
    let h = Hetzner::start();
    let p = Project::example();
    p.write("stacks/prod.toml", &p.read("stacks/dev.toml"));
    h.env(p.run())
        .args(["-s", "prod", "deploy", "--yes"])
        .run()
        .success();
    let st = state_json(&p, "prod").unwrap();
    assert_eq!(st["provider"], "hetzner");

    let fake = FakeTailscale::new();
    let gw = Gateway::start();
    gw.learn_tokens(h.env(p.run()), "prod");
    let out = fake
        .run(h.env(p.run()), "healthy")
        .env("AGENT_ARMY_GATEWAY_PROBE_URL", gw.url())
        .args(["-s", "prod", "status", "--output", "json"])
        .run();
    out.success();
    let doc = out.json();
    assert_eq!(doc["healthy"], true);
    for a in doc["agents"].as_array().unwrap() {
        let name = a["agent"].as_str().unwrap();
        assert_eq!(a["cloud"], "running", "{name}");
        assert_eq!(a["server_id"], st["agents"][name]["server_id"], "{name}");
    }
    // Offline and duplicated devices make status fail, for CI to gate on.
    let out = fake
        .run(h.env(p.run()), "degraded")
        .env("AGENT_ARMY_GATEWAY_PROBE_URL", gw.url())
        .args(["-s", "prod", "status"])
        .run();
    out.code(1).stdout_has("offline");

    // ssh goes through `tailscale ssh` to the Hetzner agent's MagicDNS name.
    fake.run(h.env(p.run()), "healthy")
        .args(["-s", "prod", "ssh", "tester", "--", "uptime"])
        .run()
        .success();
    let calls = fake.calls();
    // (status read each agent's first-boot results over `tailscale ssh` too.)
    let ssh = calls
        .iter()
        .rfind(|c| c.first().map(String::as_str) == Some("ssh"))
        .unwrap();
    assert_eq!(ssh[1], "ubuntu@prod-agent-tester.tail12345.ts.net");
    assert_eq!(ssh.last().unwrap(), "uptime");
    h.assert_no_prism_errors();
}

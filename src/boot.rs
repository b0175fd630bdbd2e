//! The first boot of an agent's VM: its steps, where each step's outcome is recorded on the VM,
//! and what that record says (pure; `status` fetches the file over ssh).
//!
//! cloud-init runs one script per step from `/var/lib/cloud/scripts/per-instance/`
//! (`agent-army-<n>-<name>`), so a failure is reported by cloud-init under the step's name and
//! the later steps still run. Each step's runner appends a line to [`RESULTS_FILE`]:
//! `n<TAB>name<TAB>state<TAB>exit<TAB>seconds<TAB>time<TAB>detail`; the last line of a step wins.

use serde::Serialize;

/// Where the step results live on the VM (world-readable; no secret is ever written there).
pub const RESULTS_FILE: &str = "/var/lib/agent-army/boot/results.tsv";

/// The command on the VM that prints [`RESULTS_FILE`] (exit 3: no step has started).
pub const REPORTER: &str = "/usr/local/bin/agent-army-boot";
/// Its name, as run over ssh.
pub const REPORTER_NAME: &str = "agent-army-boot";

/// One step of the first boot.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    /// Steps that must have succeeded for this one to run.
    pub needs: &'static [&'static str],
    pub what: &'static str,
}

/// The steps, in the order they run. Tailscale first, so the VM is reachable whatever fails
/// later; the gateway never waits on the tailnet.
pub const STEPS: &[Step] = &[
    Step {
        name: "tailscale",
        needs: &[],
        what: "join the tailnet (Tailscale from its signed apt repository)",
    },
    Step {
        name: "packages",
        needs: &[],
        what: "Docker, rootlesskit and nftables from the distribution (waits for apt's lock)",
    },
    Step {
        name: "agent-user",
        needs: &["packages"],
        what: "the unprivileged openclaw user and the metadata-service guard",
    },
    Step {
        name: "docker",
        needs: &["packages", "agent-user"],
        what: "rootless Docker for the agent's user",
    },
    Step {
        name: "openclaw",
        needs: &["agent-user"],
        what: "Node.js (checksum-verified) and OpenClaw (pinned), coding-agent CLIs",
    },
    Step {
        name: "gateway",
        needs: &["agent-user", "openclaw"],
        what: "openclaw.json, the environment file and the gateway service, up on loopback",
    },
    Step {
        name: "serve",
        needs: &["tailscale"],
        what: "`tailscale serve`: HTTPS on the tailnet to the gateway",
    },
];

/// What became of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub step: usize,
    pub name: String,
    /// `ok`, `failed`, `skipped`, `running` or `pending` (no line yet).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The whole first boot, as far as the VM recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Boot {
    /// `ok`, `failed`, `running` or `pending`.
    pub state: String,
    pub steps: Vec<StepResult>,
}

impl Boot {
    /// Reads the results file. Lines of unknown steps are kept (a VM rendered by another
    /// version); malformed lines are ignored.
    pub fn parse(text: &str) -> Boot {
        let mut steps: Vec<StepResult> = STEPS
            .iter()
            .enumerate()
            .map(|(i, s)| StepResult {
                step: i + 1,
                name: s.name.to_string(),
                state: "pending".into(),
                exit: None,
                seconds: None,
                at: None,
                detail: None,
            })
            .collect();
        for line in text.lines() {
            let f: Vec<&str> = line.splitn(7, '\t').collect();
            if f.len() < 6 {
                continue;
            }
            let Ok(n) = f[0].parse::<usize>() else {
                continue;
            };
            let r = StepResult {
                step: n,
                name: f[1].to_string(),
                state: f[2].to_string(),
                exit: f[3].parse().ok(),
                seconds: f[4].parse().ok(),
                at: Some(f[5].to_string()).filter(|s| !s.is_empty()),
                detail: f
                    .get(6)
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty()),
            };
            match steps.iter_mut().find(|s| s.step == n) {
                Some(s) => *s = r,
                None => steps.push(r),
            }
        }
        steps.sort_by_key(|s| s.step);
        let any = |st: &str| steps.iter().any(|s| s.state == st);
        let state = if steps.iter().all(|s| s.state == "ok") {
            "ok"
        } else if any("running") || (any("pending") && steps.iter().any(|s| s.state != "pending")) {
            "running"
        } else if any("failed") || any("skipped") {
            "failed"
        } else {
            "pending"
        };
        Boot {
            state: state.into(),
            steps,
        }
    }

    /// One line: `ok (7 steps, 312s)`, `running step 5/7 (openclaw)`, `failed at step 5
    /// (openclaw): <detail>; skipped: gateway`.
    pub fn summary(&self) -> String {
        let total = self.steps.len();
        match self.state.as_str() {
            "ok" => format!(
                "ok ({total} steps, {}s)",
                self.steps.iter().filter_map(|s| s.seconds).sum::<u64>()
            ),
            "running" => match self.steps.iter().find(|s| s.state == "running") {
                Some(s) => format!("running step {}/{total} ({})", s.step, s.name),
                None => format!(
                    "running ({} of {total} steps done)",
                    self.steps.iter().filter(|s| s.state != "pending").count()
                ),
            },
            "failed" => {
                let failed: Vec<&StepResult> =
                    self.steps.iter().filter(|s| s.state == "failed").collect();
                let skipped: Vec<&str> = self
                    .steps
                    .iter()
                    .filter(|s| s.state == "skipped")
                    .map(|s| s.name.as_str())
                    .collect();
                let mut out = match failed.first() {
                    Some(f) => format!(
                        "failed at step {}/{total} ({}){}",
                        f.step,
                        f.name,
                        f.detail
                            .as_deref()
                            .map(|d| format!(": {d}"))
                            .unwrap_or_default()
                    ),
                    None => "failed".to_string(),
                };
                for f in failed.iter().skip(1) {
                    out.push_str(&format!("; step {} ({}) failed too", f.step, f.name));
                }
                if !skipped.is_empty() {
                    out.push_str(&format!("; skipped: {}", skipped.join(", ")));
                }
                out
            }
            _ => "not started".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ok_sums_the_durations() {
        let text: String = STEPS
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{}\t{}\trunning\t-\t-\tT\t\n{}\t{}\tok\t0\t10\tT\t\n",
                    i + 1,
                    s.name,
                    i + 1,
                    s.name
                )
            })
            .collect();
        let b = Boot::parse(&text);
        assert_eq!(b.state, "ok");
        assert_eq!(
            b.summary(),
            format!("ok ({} steps, {}s)", STEPS.len(), STEPS.len() * 10)
        );
    }

    #[test]
    fn a_failure_names_the_step_its_detail_and_what_it_skipped() {
        let text = "1\ttailscale\tok\t0\t12\tT\t\n\
                    2\tpackages\tok\t0\t40\tT\t\n\
                    3\tagent-user\tok\t0\t1\tT\t\n\
                    4\tdocker\tok\t0\t9\tT\t\n\
                    5\topenclaw\trunning\t-\t-\tT\t\n\
                    5\topenclaw\tfailed\t1\t30\tT\tagent-army: line 27: `npm install -g openclaw@1` exited 1\n\
                    6\tgateway\tskipped\t-\t0\tT\tneeds openclaw, which failed\n\
                    7\tserve\tok\t0\t2\tT\t\n";
        let b = Boot::parse(text);
        assert_eq!(b.state, "failed");
        assert_eq!(
            b.summary(),
            "failed at step 5/7 (openclaw): agent-army: line 27: `npm install -g openclaw@1` exited 1; skipped: gateway"
        );
        assert_eq!(b.steps[4].exit, Some(1));
        assert_eq!(b.steps[4].seconds, Some(30));
    }

    #[test]
    fn running_and_pending() {
        let b = Boot::parse("1\ttailscale\tok\t0\t3\tT\t\n2\tpackages\trunning\t-\t-\tT\t\n");
        assert_eq!(b.summary(), "running step 2/7 (packages)");
        assert_eq!(Boot::parse("").summary(), "not started");
        assert_eq!(Boot::parse("garbage\n\n1\n").state, "pending");
        // Between two steps: nothing running, some done.
        let b = Boot::parse("1\ttailscale\tok\t0\t3\tT\t\n");
        assert_eq!(b.summary(), "running (1 of 7 steps done)");
    }
}

//! Hetzner's errors as [`ProviderError`]s with advice: the API's error body, a validating
//! proxy's problem+json, raw text, failed actions, and which of them are worth a retry.

use serde_json::Value;

use super::wire::ActionObj;
use crate::provider::ProviderError;

/// Advice for a Hetzner error code.
pub fn advice_for(code: &str, message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let s = match code {
        "unauthorized" => {
            "check the Hetzner API token: HCLOUD_TOKEN, or the stack's `hcloud_token` secret (`agent-army secrets set hcloud_token`)"
        }
        "forbidden" => {
            "the Hetzner API token may not do this: create a Read & Write token for the project"
        }
        "rate_limit_exceeded" => {
            "Hetzner allows 3600 API requests per hour per project, shared by every tool using it: wait a few minutes, lower --parallelism, or stop other clients of the project"
        }
        "resource_unavailable" | "placement_error" => {
            "the server type is not available in this location right now: set another `location` or `server_type` in the stack file (or `instance_type` on the agent), or retry later"
        }
        "invalid_input" if m.contains("unsupported location for server type") => {
            "this server type is not offered in this location: choose another `location` or `server_type` in the stack file (or `instance_type` on the agent)"
        }
        "uniqueness_error" => {
            "a Hetzner resource with this name already exists in the project but is not this stack's (another agent-army project or stack with the same names, or created by hand): delete or rename it, or use another stack name"
        }
        "resource_limit_exceeded" => {
            "the Hetzner project reached a resource limit (e.g. number of servers): remove resources or ask Hetzner support to raise it"
        }
        "server_error" | "unavailable" | "timeout" | "bad_gateway" => {
            "the Hetzner API is having trouble: run the command again later (it converges)"
        }
        "spec_violation" => {
            "a request or answer does not match the Hetzner OpenAPI spec: this is a bug in agent-army, please report it"
        }
        _ => return None,
    };
    Some(s.to_string())
}

/// A non-2xx answer as a [`ProviderError`]: Hetzner's `{"error":{code,message,details}}`, or
/// the `application/problem+json` of a validating proxy (Prism), or raw text.
pub fn api_error(status: u16, content_type: &str, body: &str) -> ProviderError {
    let v: Option<Value> = serde_json::from_str(body).ok();
    if content_type.contains("problem+json") {
        let v = v.unwrap_or(Value::Null);
        let title = v["title"].as_str().unwrap_or("problem");
        let mut msgs: Vec<String> = v["validation"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        let loc = x["location"]
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .map(|p| {
                                        p.as_str().map(str::to_string).unwrap_or(p.to_string())
                                    })
                                    .collect::<Vec<_>>()
                                    .join(".")
                            })
                            .unwrap_or_default();
                        format!("{loc}: {}", x["message"].as_str().unwrap_or(""))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if msgs.is_empty()
            && let Some(d) = v["detail"].as_str()
        {
            msgs.push(d.to_string());
        }
        let code = if status == 401 {
            "unauthorized"
        } else {
            "spec_violation"
        };
        let message = format!("{status} {title}: {}", msgs.join("; "));
        let mut e = ProviderError::new(code, message);
        e.advice = advice_for(code, "");
        return e;
    }
    if let Some(err) = v
        .as_ref()
        .and_then(|v| v.get("error"))
        .filter(|e| e.is_object())
    {
        let code = err["code"].as_str().unwrap_or("unknown").to_string();
        let mut message = err["message"].as_str().unwrap_or("").to_string();
        let fields: Vec<String> = err["details"]["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| {
                        let name = f["name"].as_str()?;
                        let msgs: Vec<&str> = f["messages"]
                            .as_array()
                            .map(|m| m.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        (!msgs.is_empty()).then(|| format!("{name}: {}", msgs.join(", ")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !fields.is_empty() {
            message = format!("{message} ({})", fields.join("; "));
        }
        let advice = advice_for(&code, &message);
        let mut e = ProviderError::new(code, message);
        e.advice = advice;
        return e;
    }
    let code = match status {
        401 => "unauthorized",
        429 => "rate_limit_exceeded",
        500 => "server_error",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "timeout",
        _ => "http_error",
    };
    let text: String = body.chars().take(300).collect();
    let mut e = ProviderError::new(code, format!("HTTP {status}: {}", text.trim()));
    e.advice = advice_for(code, "");
    e
}

/// Worth another attempt: the API had trouble or the resource is busy with another action.
pub(super) fn is_retryable(status: u16, code: &str) -> bool {
    matches!(
        code,
        "server_error" | "unavailable" | "timeout" | "bad_gateway" | "locked" | "conflict"
    ) || (matches!(status, 500 | 502 | 503 | 504) && code != "spec_violation")
}

pub(super) fn action_error(a: &ActionObj) -> ProviderError {
    let (code, msg) = a
        .error
        .as_ref()
        .map(|e| (e.code.clone(), e.message.clone()))
        .unwrap_or_else(|| ("action_failed".into(), String::new()));
    let code = if code.is_empty() {
        "action_failed".to_string()
    } else {
        code
    };
    let mut e = ProviderError::new(
        code.clone(),
        format!("action {} ({}) failed: {msg}", a.command, a.id),
    );
    e.advice = advice_for(&code, &msg);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::hetzner::wire::ActionErr;

    #[test]
    fn hetzner_error_body_maps_code_message_fields_and_advice() {
        let e = api_error(
            422,
            "application/json",
            r#"{"error":{"code":"invalid_input","message":"invalid input in field 'name'","details":{"fields":[{"name":"name","messages":["must be a valid hostname"]}]}}}"#,
        );
        assert_eq!(e.code, "invalid_input");
        assert_eq!(
            e.message,
            "invalid input in field 'name' (name: must be a valid hostname)"
        );
        assert!(e.advice.is_none());
        assert!(!e.transient);

        let e = api_error(
            422,
            "application/json",
            r#"{"error":{"code":"invalid_input","message":"unsupported location for server type","details":{}}}"#,
        );
        assert!(e.advice.unwrap().contains("another `location`"));

        for (code, needle) in [
            ("uniqueness_error", "already exists"),
            ("rate_limit_exceeded", "3600"),
            ("unauthorized", "HCLOUD_TOKEN"),
            ("resource_unavailable", "another `location`"),
        ] {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m","details":{{}}}}}}"#);
            let e = api_error(409, "application/json", &body);
            assert_eq!(e.code, code);
            assert!(e.advice.as_deref().unwrap().contains(needle), "{code}");
        }
    }

    #[test]
    fn prism_problem_json_is_a_spec_violation_with_its_messages() {
        let body = r#"{"type":"https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY","title":"Invalid request","status":422,"detail":"Your request is not valid","validation":[{"location":["body","server_type"],"severity":"Error","code":"required","message":"Request body must have required property 'server_type'"}]}"#;
        let e = api_error(422, "application/problem+json", body);
        assert_eq!(e.code, "spec_violation");
        assert_eq!(
            e.message,
            "422 Invalid request: body.server_type: Request body must have required property 'server_type'"
        );
        assert!(e.advice.unwrap().contains("bug"));
        let e = api_error(
            401,
            "application/problem+json",
            r#"{"title":"Invalid security scheme used","detail":"no auth"}"#,
        );
        assert_eq!(e.code, "unauthorized");
        assert!(e.message.contains("no auth"));
    }

    #[test]
    fn non_json_errors_fall_back_to_status() {
        let e = api_error(502, "text/html", "<html>bad gateway</html>");
        assert_eq!(e.code, "bad_gateway");
        assert!(is_retryable(502, &e.code));
        assert!(!is_retryable(422, "invalid_input"));
        assert!(!is_retryable(409, "uniqueness_error"));
        assert!(is_retryable(423, "locked"));
        assert!(!is_retryable(500, "spec_violation"));
    }

    #[test]
    fn action_errors_keep_their_code() {
        let a = ActionObj {
            id: 7,
            command: "create_server".into(),
            status: "error".into(),
            error: Some(ActionErr {
                code: "resource_unavailable".into(),
                message: "no capacity".into(),
            }),
        };
        let e = action_error(&a);
        assert_eq!(e.code, "resource_unavailable");
        assert!(e.message.contains("create_server (7) failed: no capacity"));
        assert!(e.advice.is_some());
    }
}

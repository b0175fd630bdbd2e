//! `tailscale netcheck --format=json` (`netcheck.Report`), parsed, and summarised as the
//! chances of direct connections from this machine.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::status::nullable;

/// `tailscale netcheck --format=json` (`netcheck.Report`): the fields agent-army reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetcheckReport {
    /// A UDP STUN round trip completed.
    #[serde(rename = "UDP", default)]
    pub udp: bool,
    #[serde(rename = "IPv4", default)]
    pub ipv4: bool,
    #[serde(rename = "IPv6", default)]
    pub ipv6: bool,
    /// Whether the public mapping depends on the destination (hard NAT); `null` = not known.
    #[serde(rename = "MappingVariesByDestIP", default)]
    pub mapping_varies_by_dest_ip: Option<bool>,
    #[serde(rename = "UPnP", default)]
    pub upnp: Option<bool>,
    #[serde(rename = "PMP", default)]
    pub pmp: Option<bool>,
    #[serde(rename = "PCP", default)]
    pub pcp: Option<bool>,
    /// DERP region id, 0 when unknown.
    #[serde(rename = "PreferredDERP", default)]
    pub preferred_derp: i64,
    /// Region id → latency in nanoseconds.
    #[serde(rename = "RegionLatency", default, deserialize_with = "nullable")]
    pub region_latency: BTreeMap<String, i64>,
    #[serde(rename = "GlobalV4", default, deserialize_with = "nullable")]
    pub global_v4: String,
    #[serde(rename = "GlobalV6", default, deserialize_with = "nullable")]
    pub global_v6: String,
    #[serde(rename = "CaptivePortal", default)]
    pub captive_portal: Option<bool>,
}

/// Parse netcheck output, skipping anything before the JSON object (a login banner, say).
pub fn parse_netcheck(text: &str) -> Result<NetcheckReport, String> {
    let start = text
        .find('{')
        .ok_or_else(|| "no JSON in the output of `tailscale netcheck`".to_string())?;
    serde_json::Deserializer::from_str(&text[start..])
        .into_iter::<NetcheckReport>()
        .next()
        .unwrap_or_else(|| Err(serde::de::Error::custom("empty output")))
        .map_err(|e| format!("unreadable `tailscale netcheck` output: {e}"))
}

/// What netcheck says about an agent's chances of direct connections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetcheckSummary {
    pub udp: bool,
    pub ipv4: bool,
    pub ipv6: bool,
    pub global_v4: Option<String>,
    /// `MappingVariesByDestIP`: the NAT maps each destination to a different port.
    pub hard_nat: Option<bool>,
    /// Preferred DERP region id.
    pub preferred_derp: Option<i64>,
    pub preferred_derp_latency_ms: Option<f64>,
    /// Connections to this agent are likely to stay on a DERP relay.
    pub relay_risk: bool,
    pub reasons: Vec<String>,
}

pub fn summarize(r: &NetcheckReport) -> NetcheckSummary {
    let mut reasons = Vec::new();
    if !r.udp {
        reasons.push("no UDP: every connection goes through a DERP relay".to_string());
    }
    if r.mapping_varies_by_dest_ip == Some(true) {
        reasons.push(
            "hard NAT (MappingVariesByDestIP): direct connections only work when the other side has an easy NAT or a public address"
                .to_string(),
        );
    }
    if r.region_latency.is_empty() {
        reasons.push("no DERP region answered".to_string());
    }
    if r.captive_portal == Some(true) {
        reasons.push("a captive portal intercepts HTTP".to_string());
    }
    let preferred = (r.preferred_derp != 0).then_some(r.preferred_derp);
    let latency = preferred
        .and_then(|id| r.region_latency.get(&id.to_string()))
        .map(|ns| (*ns as f64 / 100_000.0).round() / 10.0);
    NetcheckSummary {
        udp: r.udp,
        ipv4: r.ipv4,
        ipv6: r.ipv6,
        global_v4: (!r.global_v4.is_empty()).then(|| r.global_v4.clone()),
        hard_nat: r.mapping_varies_by_dest_ip,
        preferred_derp: preferred,
        preferred_derp_latency_ms: latency,
        relay_risk: !r.udp || r.mapping_varies_by_dest_ip == Some(true),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netcheck_easy_and_hard() {
        let easy = parse_netcheck(include_str!(
            "../../tests/fixtures/tailscale/netcheck-easy.json"
        ))
        .unwrap();
        let s = summarize(&easy);
        assert!(s.udp && !s.relay_risk, "{s:?}");
        assert_eq!(s.hard_nat, Some(false));
        assert_eq!(s.preferred_derp, Some(4));
        assert_eq!(s.preferred_derp_latency_ms, Some(4.2));
        assert_eq!(s.global_v4.as_deref(), Some("198.51.100.21:41641"));

        let hard = summarize(
            &parse_netcheck(include_str!(
                "../../tests/fixtures/tailscale/netcheck-hard-nat.json"
            ))
            .unwrap(),
        );
        assert!(hard.relay_risk);
        assert!(hard.reasons[0].contains("hard NAT"));

        let no_udp = summarize(
            &parse_netcheck(include_str!(
                "../../tests/fixtures/tailscale/netcheck-no-udp.json"
            ))
            .unwrap(),
        );
        assert!(no_udp.relay_risk && !no_udp.udp);
        assert_eq!(no_udp.hard_nat, None, "null means not known");
        assert!(no_udp.reasons[0].starts_with("no UDP"));
    }

    #[test]
    fn netcheck_output_with_noise() {
        let r =
            parse_netcheck("Welcome!\n{\"UDP\": true, \"PreferredDERP\": 1}\ntrailing\n").unwrap();
        assert!(r.udp);
        assert!(parse_netcheck("command not found").is_err());
    }
}

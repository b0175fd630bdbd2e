//! A small YAML writer for documents built as JSON values (the Kubernetes manifests).
//!
//! The manifests are built with serde (`serde_json::json!`), so their structure cannot be
//! broken by a user's value; this only spells a value in block-style YAML, which reads better
//! than JSON in review. Strings are plain only when no YAML reader can take them for anything
//! else; otherwise they go through [`escape::yaml_quote`] or, multi-line, [`escape::yaml_block`].

use serde_json::Value;

use super::escape;

/// Several values as one multi-document YAML stream.
pub fn documents(docs: &[Value]) -> String {
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&to_yaml(d));
    }
    out
}

/// One value as a YAML document (without the `---` marker), ending with a newline.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

/// Keys written first, in this order, wherever they occur; the others follow sorted. The order
/// must not depend on the map's own (serde_json keeps insertion order when a dependency turns
/// on `preserve_order`, as a dev-dependency does in test builds).
const FIRST: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "type",
];

fn ordered(m: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    let rank = |k: &str| FIRST.iter().position(|f| *f == k).unwrap_or(FIRST.len());
    entries.sort_by(|a, b| (rank(a.0), a.0).cmp(&(rank(b.0), b.0)));
    entries
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    let pad = " ".repeat(indent);
    for (k, v) in ordered(m) {
        out.push_str(&pad);
        out.push_str(&key(k));
        out.push(':');
        match v {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, indent + 2);
            }
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Value::Object(inner) if !inner.is_empty() => {
                // The first key goes on the dash's line: write the map two columns in, then put
                // the dash in place of its first indentation.
                let mut body = String::new();
                write_map(&mut body, inner, indent + 2);
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&body[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push_str(&pad);
                out.push_str("-\n");
                write_seq(out, inner, indent + 2);
            }
            other => {
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&scalar(other, indent + 2));
                out.push('\n');
            }
        }
    }
}

/// A scalar (or an empty collection); `indent` is where a literal block's lines go.
fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.contains('\n') => escape::yaml_block(s, indent),
        Value::String(s) if plain_safe(s) => s.clone(),
        Value::String(s) => escape::yaml_quote(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

fn key(k: &str) -> String {
    if plain_safe(k) {
        k.to_string()
    } else {
        escape::yaml_quote(k)
    }
}

/// Whether `s` reads back as exactly this string when written plain, under YAML 1.1 and 1.2
/// alike: it starts with a letter or `/` (paths), uses only characters without a meaning in YAML (a colon only
/// inside), and is none of the words YAML 1.1 reads as booleans or null.
fn plain_safe(s: &str) -> bool {
    const WORDS: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_' | ':' | '@' | '+')
        })
        && !s.ends_with(':')
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_with_dashes_and_nested_maps() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "dev-agent-pm", "labels": {"agent-army/stack": "dev"}},
            "list": [{"name": "a", "value": "1"}, "x", [], {}],
            "empty": {},
            "n": 3,
            "b": false,
        });
        let text = to_yaml(&v);
        assert!(text.contains("kind: ConfigMap\n"), "{text}");
        assert!(
            text.contains("  labels:\n    agent-army/stack: dev\n"),
            "{text}"
        );
        assert!(
            text.contains("list:\n  - name: a\n    value: \"1\"\n  - x\n"),
            "{text}"
        );
        assert!(text.contains("empty: {}\n"), "{text}");
    }

    #[test]
    fn every_string_reads_back_as_itself() {
        let nasty = [
            "yes",
            "No",
            "null",
            "~",
            "1",
            "0x1F",
            "1e3",
            "1Gi",
            "0.0.0.0/0",
            "a: b",
            "a #b",
            "-x",
            "*ref",
            "&a",
            "!tag",
            "%p",
            "@x",
            "`x`",
            "a:",
            "'q'",
            "\"d\"",
            "",
            " lead",
            "trail ",
            "tab\there",
            "line\nbreak\n",
            "two\n\nblank\n\n",
            "uni\u{2028}code",
            "ghcr.io/tailscale/tailscale:v1.82.5",
            "${TS_CERT_DOMAIN}:443",
            "{x}",
            "[x]",
            "#!/bin/sh\nset -eu\n",
            "/var/lib/openclaw",
            "/",
            "//x",
            "/a: b",
        ];
        for s in nasty {
            let v = json!({ s: s, "list": [s, {"k": s}] });
            let text = to_yaml(&v);
            let back: serde_json::Value = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{s:?} gave unreadable YAML: {e}\n{text}"));
            assert_eq!(back, v, "{s:?} did not survive:\n{text}");
        }
    }
}

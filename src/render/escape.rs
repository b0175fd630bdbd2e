//! Escaping for the two languages user values are placed into: YAML and POSIX shell.

/// A YAML double-quoted scalar that parses back to exactly `s`. Everything outside printable
/// ASCII is escaped, which also covers characters YAML 1.1 parsers treat as line breaks
/// (U+0085, U+2028, U+2029) and the BOM.
pub fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    // Most values need no escape at all.
    if s.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
    {
        out.push_str(s);
        out.push('"');
        return out;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// A YAML scalar for a possibly multi-line value. Uses a literal block (`|`) indented by
/// `indent` spaces when that represents `s` exactly, which keeps scripts readable; otherwise
/// falls back to [`yaml_quote`].
pub fn yaml_block(s: &str, indent: usize) -> String {
    // Printable ASCII and newlines only (bytes: any other character has a byte outside).
    let block_safe = s.contains('\n')
        && s.bytes().all(|b| b == b'\n' || (b' '..=b'~').contains(&b))
        && !s.starts_with(' ')
        && !s.starts_with('\n');
    if !block_safe {
        return yaml_quote(s);
    }
    // Chomping: `|` keeps exactly one final newline, `|-` none, `|+` all.
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let body = s.trim_end_matches('\n');
    let mut out = String::with_capacity(s.len() + (indent + 1) * (s.len() / 32 + 1) + 4);
    out.push('|');
    out.push_str(chomp);
    out.push('\n');
    for line in body.split('\n') {
        if line.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&pad);
            out.push_str(line);
            out.push('\n');
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    // The template supplies the newline after the value.
    out.pop();
    out
}

/// A POSIX shell word that expands to exactly `s` (single quotes; `'` becomes `'\''`).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &[&str] = &[
        "plain",
        "it's \"quoted\"",
        "line1\nline2\n",
        "$(rm -rf /) `id` ${HOME} ; | & > <",
        "key: value\n- item\n# comment\n---\n...",
        "tab\there\r\n",
        "unicode é ✓ \u{2028} \u{85} \u{FEFF} 😀",
        "\\backslash\\",
        "",
        " leading space",
        "trailing\n\n\n",
        "{ \"json\": [1, 2] }",
        "&anchor *alias !tag %directive @at",
    ];

    fn parse_yaml_string(doc: &str) -> String {
        #[derive(serde::Deserialize)]
        struct V {
            v: String,
        }
        serde_saphyr::from_str::<V>(doc).unwrap().v
    }

    #[test]
    fn yaml_quote_roundtrips() {
        for s in NASTY {
            let doc = format!("v: {}\n", yaml_quote(s));
            assert_eq!(&parse_yaml_string(&doc), s, "doc was {doc}");
        }
    }

    #[test]
    fn yaml_block_roundtrips() {
        for s in NASTY {
            let doc = format!("w:\n  v: {}\n", yaml_block(s, 4));
            #[derive(serde::Deserialize)]
            struct W {
                w: V,
            }
            #[derive(serde::Deserialize)]
            struct V {
                v: String,
            }
            let got = serde_saphyr::from_str::<W>(&doc).unwrap().w.v;
            assert_eq!(&got, s, "doc was {doc}");
        }
    }

    #[test]
    fn sh_quote_roundtrips_through_a_real_shell() {
        for s in NASTY {
            let script = format!("printf '%s' {}", sh_quote(s));
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                *s,
                "script was {script}"
            );
        }
    }
}

//! Diagnostics for bad input: file, line, column, field, message and a suggested fix.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub field: String,
    pub message: String,
    pub help: Option<String>,
    /// The offending source line with carets (see [`snippet`]), when the problem has a span.
    pub snippet: Option<String>,
}

impl Diagnostic {
    /// As shown to people: the one-line summary, the source line with carets under the
    /// problem (as cargo shows it), then the help.
    pub fn render(&self) -> String {
        let mut out = self.summary();
        if let Some(s) = &self.snippet {
            out.push('\n');
            out.push_str(s.trim_end());
        }
        if let Some(h) = &self.help {
            out.push_str(&format!("\n  help: {h}"));
        }
        out
    }

    /// `file:line:col: `field`: message`.
    fn summary(&self) -> String {
        // A syntax error before any key belongs to no field: no empty "``".
        let field = if self.field.is_empty() {
            String::new()
        } else {
            format!("`{}`: ", self.field)
        };
        format!(
            "{}:{}:{}: {field}{}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        if let Some(h) = &self.help {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// A source file and its text, for turning byte offsets into positions and field paths.
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Source { path, text }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }

    /// A diagnostic at a byte span.
    pub fn at(
        &self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, col) = self.position(span.start);
        Diagnostic {
            file: self.path.to_path_buf(),
            line,
            col,
            field: field.into(),
            message: message.into(),
            help: None,
            snippet: (!span.is_empty()).then(|| snippet(self.path, self.text, span)),
        }
    }

    /// Translate a TOML parse or deserialization error.
    pub fn from_toml(&self, err: &toml::de::Error) -> Diagnostic {
        let span = err.span().unwrap_or(0..0);
        let raw = err.message().trim().to_string();
        let table = self.table_at(span.start);
        let qualify = |k: &str| {
            if table.is_empty() {
                k.to_string()
            } else {
                format!("{table}.{k}")
            }
        };
        let (field, message, help) = if let Some(rest) = raw.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or_default().to_string();
            let expected = backticked(rest.split_once("expected").map(|x| x.1).unwrap_or(""));
            let help = match suggest(&name, &expected) {
                Some(s) => Some(format!("did you mean `{s}`?")),
                None if !expected.is_empty() => Some(format!(
                    "valid keys here: {}",
                    expected
                        .iter()
                        .map(|e| format!("`{e}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None => None,
            };
            // An unknown table is reported at its own header, which `table_at` already
            // returns whole: `[defaults.foo]` is the field `defaults.foo`, not `defaults.foo.foo`.
            let field = if self.on_header(span.start) && !table.is_empty() {
                table.clone()
            } else {
                qualify(&name)
            };
            (field, format!("unknown key `{name}`"), help)
        } else if let Some(rest) = raw.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or_default().to_string();
            (
                qualify(&name),
                format!("missing required key `{name}`"),
                Some(format!("add `{name} = ...`")),
            )
        } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
            let name = rest.split('`').next().unwrap_or_default().to_string();
            let expected = backticked(rest.split_once("expected").map(|x| x.1).unwrap_or(""));
            let field = self
                .key_at(span.start)
                .map(|k| qualify(&k))
                .unwrap_or_default();
            let help = suggest(&name, &expected)
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| {
                    Some(format!(
                        "expected one of: {}",
                        expected
                            .iter()
                            .map(|e| format!("`{e}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                });
            (field, format!("unknown value `{name}`"), help)
        } else {
            let field = self
                .key_at(span.start)
                .map(|k| qualify(&k))
                .unwrap_or_else(|| table.clone());
            (field, raw.replace('\n', " "), None)
        };
        let mut d = self.at(span, field, message);
        d.help = help;
        d
    }

    /// Whether `offset` lies on a `[table]` or `[[array]]` header line.
    fn on_header(&self, offset: usize) -> bool {
        let at = floor_char_boundary(self.text, offset);
        let start = self.text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line = self.text[start..].lines().next().unwrap_or("").trim();
        line.starts_with('[') && !line.contains('=')
    }

    /// The dotted name of the `[table]` or `[[array]]` that contains `offset` ("" for the root).
    fn table_at(&self, offset: usize) -> String {
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        // The header itself may start at `offset` (a missing key inside a table is reported
        // at the table's header).
        let cur_line_end = self.text[before.len()..]
            .find('\n')
            .map(|i| before.len() + i)
            .unwrap_or(self.text.len());
        for line in self.text[..cur_line_end].lines().rev() {
            let t = line.trim();
            if let Some(h) = t.strip_prefix("[[") {
                return h.trim_end_matches("]]").trim().to_string();
            }
            if let Some(h) = t.strip_prefix('[')
                && !t.contains('=')
            {
                return h.trim_end_matches(']').trim().to_string();
            }
        }
        String::new()
    }

    /// The key of the `key = value` line at or before `offset`, within the current table.
    fn key_at(&self, offset: usize) -> Option<String> {
        let end = floor_char_boundary(self.text, offset);
        let line_end = self.text[end..]
            .find('\n')
            .map(|i| end + i)
            .unwrap_or(self.text.len());
        for line in self.text[..line_end].lines().rev() {
            let t = line.trim();
            if t.starts_with('[') && !t.contains('=') {
                return None;
            }
            if let Some((k, _)) = t.split_once('=') {
                let k = k.trim().trim_matches('"');
                if !k.is_empty() && !k.starts_with('#') {
                    return Some(k.to_string());
                }
            }
        }
        None
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Every `word` in backticks in `s`.
fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_string())
        .collect()
}

/// The candidate closest to `word`, if it is close enough to be a likely typo
/// (Jaro-Winkler similarity, which favours a shared prefix such as `disk_size` → `disk_gb`).
pub fn suggest(word: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let p = Path::new("f.toml");
        let s = Source::new(p, "a = 1\nbb = 2\n");
        assert_eq!(s.position(0), (1, 1));
        assert_eq!(s.position(6), (2, 1));
        assert_eq!(s.position(11), (2, 6));
    }

    #[test]
    fn syntax_error_before_any_key_names_no_field() {
        let p = Path::new("f.toml");
        let text = "= 1\n";
        let e = toml::from_str::<toml::Table>(text).unwrap_err();
        let d = Source::new(p, text).from_toml(&e);
        assert_eq!(d.field, "");
        let shown = d.to_string();
        assert!(shown.starts_with("f.toml:1:1: "), "{shown}");
        assert!(!shown.contains("``"), "{shown}");
    }

    #[test]
    fn suggestion_picks_close_key() {
        let c: Vec<String> = ["region", "provider", "location"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(suggest("regoin", &c).as_deref(), Some("region"));
        assert_eq!(suggest("zzzzzzzz", &c), None);
    }

    #[test]
    fn unknown_table_is_named_once() {
        let p = Path::new("f.toml");
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Top {
            x: Option<u32>,
            aws: Option<Inner>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            y: Option<u32>,
        }
        for (text, field) in [
            ("x = 1\n\n[default]\nz = 2\n", "default"),
            ("[aws]\ny = 1\n\n[aws.extra]\nz = 2\n", "aws.extra"),
            ("[aws]\nyy = 1\n", "aws.yy"),
        ] {
            let e = toml::from_str::<Top>(text).unwrap_err();
            let d = Source::new(p, text).from_toml(&e);
            assert_eq!(d.field, field, "{text:?}: {d}");
        }
    }

    #[test]
    fn field_names_include_table() {
        let p = Path::new("f.toml");
        let text = "x = 1\n[[agents]]\nname = \"a\"\ndisk_gb = \"big\"\n";
        let s = Source::new(p, text);
        let off = text.find("\"big\"").unwrap();
        assert_eq!(s.table_at(off), "agents");
        assert_eq!(s.key_at(off).as_deref(), Some("disk_gb"));
    }
}

/// The source line(s) of `span` in `text`, with carets under the span, as cargo shows them.
pub fn snippet(path: &Path, text: &str, span: std::ops::Range<usize>) -> String {
    use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
    let end = span.end.max(span.start).min(text.len());
    let start = floor_char_boundary(text, span.start.min(end));
    let end = floor_char_boundary(text, end);
    let path = path.display().to_string();
    let report = [Group::with_level(Level::ERROR).element(
        Snippet::source(text)
            .path(path.as_str())
            .fold(true)
            .annotation(AnnotationKind::Primary.span(start..end)),
    )];
    Renderer::plain().render(&report).to_string()
}

#[cfg(test)]
mod snippet_tests {
    use super::*;

    #[test]
    fn shows_the_line_with_carets() {
        let text = "provider = \"hetzner\"\nlocaton = \"fsn1\"\nserver_type = \"cx22\"\n";
        let s = snippet(Path::new("stacks/dev.toml"), text, 21..28);
        println!("{s}");
        assert!(s.contains("locaton = \"fsn1\""), "{s}");
        assert!(s.contains("^^^^^^^"), "{s}");
        assert!(!s.contains("server_type"), "{s}");
    }
}

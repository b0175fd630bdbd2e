//! Colour for people, never for machines: `--color auto|always|never`, `NO_COLOR` and
//! `CLICOLOR_FORCE`, decided once per run. Styled text is printed through `anstream`, which
//! drops the escape codes when colour is off, so JSON and piped output stay plain.

use anstyle::{AnsiColor, Style};

use super::ColorWhen;
use crate::env::{Env, vars};

/// Decide colour for this run (`NO_COLOR` wins over `CLICOLOR_FORCE`; the flag wins over both).
pub fn init(when: ColorWhen, env: &Env) {
    let set = |v: Option<&str>| v.is_some_and(|v| !v.is_empty());
    let choice = match when {
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
        ColorWhen::Auto if set(env.get(vars::NO_COLOR)) => anstream::ColorChoice::Never,
        ColorWhen::Auto if set(env.get(vars::CLICOLOR_FORCE).filter(|v| *v != "0")) => {
            anstream::ColorChoice::Always
        }
        ColorWhen::Auto => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                anstream::ColorChoice::Always
            } else {
                anstream::ColorChoice::Never
            }
        }
    };
    choice.write_global();
}

fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

const GREEN: Style = AnsiColor::Green.on_default();
const RED: Style = AnsiColor::Red.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const BOLD: Style = Style::new().bold();

/// A plan diff, Terraform's colours: `+` green, `-` red, `-/+` and in-place `~` yellow.
pub fn plan(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let styled = if body.starts_with("  + ") {
            paint(GREEN, body)
        } else if body.starts_with("  - ") {
            paint(RED, body)
        } else if body.starts_with("-/+ ")
            || (body.starts_with("  ~ ") && !body.contains("(no change"))
        {
            paint(YELLOW, body)
        } else if body.starts_with("Plan: ") || body.starts_with("No changes") {
            paint(BOLD, body)
        } else {
            body.to_string()
        };
        out.push_str(&styled);
        out.push_str(nl);
    }
    out
}

/// A status table: the HEALTHY column (last) green or red.
pub fn status_table(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let body = line.trim_end_matches('\n');
            let nl = &line[body.len()..];
            if let Some(head) = body.strip_suffix("  yes") {
                format!("{head}  {}{nl}", paint(GREEN, "yes"))
            } else if let Some(head) = body.strip_suffix("  no") {
                format!("{head}  {}{nl}", paint(RED, "no"))
            } else {
                line.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_lines_get_terraform_colours() {
        let p = plan(
            "  + a\n  - b\n-/+ c\n  ~ d (no change, 1)\n  ~ firewall 1: update rules\nPlan: 1\n",
        );
        assert!(p.contains("\u{1b}[32m  + a\u{1b}[0m\n"), "{p:?}");
        assert!(p.contains("\u{1b}[31m  - b\u{1b}[0m\n"), "{p:?}");
        assert!(p.contains("\u{1b}[33m-/+ c\u{1b}[0m\n"), "{p:?}");
        assert!(p.contains("\n  ~ d (no change, 1)\n"), "{p:?}");
        assert!(p.contains("\u{1b}[33m  ~ firewall"), "{p:?}");
        let s = status_table("AGENT  HEALTHY\na      yes\nb      no\n");
        assert!(
            s.contains("a      \u{1b}[32myes\u{1b}[0m\n") && s.contains("\u{1b}[31mno\u{1b}[0m"),
            "{s:?}"
        );
    }
}

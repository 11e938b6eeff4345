//! Output hygiene: text that reaches a terminal or a log line with its control characters
//! made visible.
//!
//! Every human-readable line (command summaries, error messages, log fields) may carry text
//! from a log record or a source listing (`eventName`, `userAgent`, file names, object keys), all
//! attacker-influenced. A raw `\n` there forges a line of output, a raw ESC moves the cursor or
//! clears the screen, a NUL or a bidirectional override hides what follows. [`escaped`] writes
//! such characters as visible escapes (`\n`, `\x1b`, `\u{202e}`); everything else, backslashes
//! included, is written unchanged, so ordinary text (paths, ARNs, non-ASCII names) reads as is.

use std::borrow::Cow;
use std::fmt::{self, Display, Write};

/// True for a character that is escaped: C0 controls (U+0000–U+001F, tab and newline included),
/// DEL (U+007F), C1 controls (U+0080–U+009F), the line and paragraph separators
/// (U+2028, U+2029) and the bidirectional controls (U+200E, U+200F, U+202A–U+202E,
/// U+2066–U+2069).
pub fn is_escaped(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{200e}' | '\u{200f}'
        | '\u{2028}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Writes `c` as a visible escape: `\n`, `\r`, `\t`, `\0`, `\xHH` for the other C0 controls
/// and DEL, `\u{hhhh}` for the rest. Only called for characters [`is_escaped`] accepts.
fn write_escape(out: &mut impl Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\0' => out.write_str("\\0"),
        c if (c as u32) <= 0x7f => write!(out, "\\x{:02x}", c as u32),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

/// `value`'s `Display` output with every character [`is_escaped`] accepts written as a visible
/// escape. Streams: nothing is allocated.
///
/// ```
/// use trailsight::escape::escaped;
/// let forged = "x\u{1b}[2J\nFAKE: Insights: 0 started";
/// assert_eq!(escaped(forged).to_string(), "x\\x1b[2J\\nFAKE: Insights: 0 started");
/// ```
pub fn escaped<T: Display>(value: T) -> Escaped<T> {
    Escaped(value)
}

/// The same as [`escaped`] for a string slice, borrowing it when nothing needs escaping.
pub fn escape(text: &str) -> Cow<'_, str> {
    if text.chars().any(is_escaped) {
        Cow::Owned(escaped(text).to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// A value displayed with its control characters escaped (see [`escaped`]).
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: Display> Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

/// Escapes what passes through it, character by character.
struct EscapingWriter<'a, W: Write>(&'a mut W);

impl<W: Write> Write for EscapingWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((i, c)) = rest.char_indices().find(|&(_, c)| is_escaped(c)) {
            self.0.write_str(&rest[..i])?;
            write_escape(self.0, c)?;
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            escape("a\nb\rc\td\0e\u{1b}[2Jf\u{7}g\u{7f}h"),
            "a\\nb\\rc\\td\\0e\\x1b[2Jf\\x07g\\x7fh"
        );
        // C1 (a single-byte CSI in some terminals), line/paragraph separators, bidi overrides.
        assert_eq!(
            escape("\u{9b}2J\u{85}\u{2028}\u{2029}\u{202e}txt.exe\u{2066}\u{200f}"),
            "\\u{9b}2J\\u{85}\\u{2028}\\u{2029}\\u{202e}txt.exe\\u{2066}\\u{200f}"
        );
    }

    #[test]
    fn ordinary_text_is_unchanged_and_borrowed() {
        for s in [
            "",
            "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/10/x.json.gz",
            "arn:aws:iam::111122223333:user/ünïcødé-名前 🙂",
            r"C:\path\with\backslashes \u{1b} literal",
            "\u{a0}non-breaking and \u{a0} above C1",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
    }

    #[test]
    fn no_output_line_can_be_forged() {
        // Every character, alone and between text: the escaped form holds no control
        // character, so it stays one line whatever the input.
        for u in 0..=0x3000u32 {
            let Some(c) = char::from_u32(u) else { continue };
            let s = escaped(format_args!("a{c}b")).to_string();
            assert!(!s.chars().any(is_escaped), "U+{u:04X} -> {s:?}");
            assert!(!s.contains('\n') && !s.contains('\r'), "U+{u:04X}");
            assert!(s.starts_with('a') && s.ends_with('b'));
        }
        // Through Display of another value, across several writes.
        let n = 5;
        assert_eq!(
            escaped(format_args!("{}|{n}", "x\ny")).to_string(),
            "x\\ny|5"
        );
    }
}

//! Text from files made safe to print: a tensor name, a class name or a metadata key read from a
//! weights file may hold escape sequences that would drive the terminal (move the cursor, retitle
//! the window, hide what follows). They are shown, not obeyed, as spec diagnostics show them.

/// `text` with every control character made visible: the C0 controls, DEL and the bidirectional
/// overrides as annotate-snippets renders spec diagnostics (`␛`, `�`; a tab becomes spaces), and
/// the C1 controls it leaves (`\u{9b}` opens a sequence on some terminals) as `\u{9b}`. Line
/// breaks stay: messages span lines.
pub fn printable(text: &str) -> String {
    let shown = annotate_snippets::normalize_untrusted_str(text);
    if !shown.chars().any(is_c1) {
        return shown;
    }
    shown
        .chars()
        .map(|c| {
            if is_c1(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether `c` is a C1 control character (U+0080 to U+009F).
fn is_c1(c: char) -> bool {
    ('\u{80}'..='\u{9f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_shown_not_obeyed() {
        assert_eq!(printable("plain name.weight"), "plain name.weight");
        assert_eq!(printable("a\x1b]0;owned\x07b"), "a␛]0;owned␇b");
        assert_eq!(printable("x\ry\u{202e}z"), "x␍y�z");
        assert_eq!(printable("c1\u{9b}31m"), "c1\\u{9b}31m");
        assert_eq!(printable("two\nlines"), "two\nlines");
    }
}

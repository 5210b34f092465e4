//! `cnnc check --format github`: one GitHub Actions workflow command per diagnostic
//! (`::error file=...,line=...::message`), which a workflow run shows as an annotation on the
//! spec's line. Text from the spec is shown, never obeyed: control characters become visible
//! symbols (as in the text rendering), and the runner's own escaping keeps a newline in a name
//! from starting a command of its own.

use cnnc_spec::{Diagnostic, Severity, Source};

use super::terminal::printable;

/// The workflow command for `diagnostic`: its place, its code as the title, and its message
/// with notes and help as the annotation's lines.
pub fn annotation(diagnostic: &Diagnostic, source: &Source) -> String {
    let command = match diagnostic.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let start = source.line_col(diagnostic.span.start as usize);
    let end = source.line_col(diagnostic.span.end as usize);
    let mut message = printable(&diagnostic.message);
    for note in &diagnostic.notes {
        message.push_str(&format!("\nnote: {}", printable(note)));
    }
    if let Some(help) = &diagnostic.help {
        message.push_str(&format!("\nhelp: {}", printable(help)));
    }
    format!(
        "::{command} file={},line={},col={},endLine={},endColumn={},title={}::{}",
        property(&printable(source.name())),
        start.line,
        start.column,
        end.line,
        end.column,
        property(diagnostic.code.as_str()),
        data(&message),
    )
}

/// A command's message, escaped as GitHub's runner expects: `%`, CR and LF.
fn data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A command's property value: as [`data`], and `:` and `,`, which separate properties.
fn property(text: &str) -> String {
    data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_as_the_runner_reads() {
        assert_eq!(data("100%\r\nnext"), "100%25%0D%0Anext");
        assert_eq!(property("C:\\a,b%.yaml"), "C%3A\\a%2Cb%25.yaml");
    }
}

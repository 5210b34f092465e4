//! Source text and byte spans. Every IR node carries a [`Span`] (a byte range); turning one into a
//! line and column happens only here, in [`Source::line_col`].

use std::ops::Range;
use std::path::Path;

/// A byte range `start..end` into a [`Source`]'s text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
}

impl Span {
    /// The span `start..end`; offsets past `u32::MAX` saturate (sources are capped far below).
    pub fn new(start: usize, end: usize) -> Self {
        let clamp = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Span {
            start: clamp(start),
            end: clamp(end.max(start)),
        }
    }

    /// The smallest span covering both.
    pub fn join(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// The byte range, for slicing.
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// Whether the span covers no bytes.
    pub fn is_empty(self) -> bool {
        self.start == self.end
    }

    /// This span moved `by` bytes to the right (used when a spec is embedded in larger text).
    pub fn shifted(self, by: usize) -> Span {
        Span::new(self.start as usize + by, self.end as usize + by)
    }
}

/// Which of the two spec languages a text is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// YAML (`.yaml` / `.yml`).
    Yaml,
    /// The cnnc DSL (`.cnn`).
    Dsl,
}

impl Format {
    /// The format a file extension implies: `.yaml`/`.yml` or `.cnn`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Format::Yaml),
            "cnn" => Some(Format::Dsl),
            _ => None,
        }
    }

    /// The canonical file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Yaml => "yaml",
            Format::Dsl => "cnn",
        }
    }
}

/// A 1-based line and column; the column counts characters, not bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineCol {
    /// Line number, from 1.
    pub line: usize,
    /// Column number in characters, from 1.
    pub column: usize,
}

/// A spec's text with its display name (a path, or `<stdin>`) and format.
#[derive(Clone, Debug)]
pub struct Source {
    name: String,
    text: String,
    format: Format,
    line_starts: Vec<usize>,
    /// Whether each line is ASCII, so its columns are byte counts: a column costs nothing to
    /// find however long the line, and many diagnostics on one long line stay linear.
    ascii_lines: Vec<bool>,
}

impl Source {
    /// Wraps `text` named `name` (shown in diagnostics) written in `format`.
    pub fn new(name: impl Into<String>, text: impl Into<String>, format: Format) -> Self {
        let text = text.into();
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let ascii_lines = line_starts
            .iter()
            .enumerate()
            .map(|(line, &start)| {
                let end = line_starts.get(line + 1).copied().unwrap_or(text.len());
                text.as_bytes()[start..end].is_ascii()
            })
            .collect();
        Source {
            name: name.into(),
            text,
            format,
            line_starts,
            ascii_lines,
        }
    }

    /// Display name (path or `<stdin>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The language the text is written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The text a span covers (empty if the span is out of range).
    pub fn slice(&self, span: Span) -> &str {
        self.text.get(span.range()).unwrap_or("")
    }

    /// Line and column of a byte offset (clamped to the text and to a character boundary).
    pub fn line_col(&self, offset: usize) -> LineCol {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        let column = if self.ascii_lines[line] {
            offset - start
        } else {
            self.text[start..offset].chars().count()
        };
        LineCol {
            line: line + 1,
            column: column + 1,
        }
    }

    /// Byte offset of the start of a 1-based line (the end of the text past the last line).
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.text.len())
    }

    /// Byte offset of a 1-based line and character column, as parsers that report positions
    /// only as line/column give them; clamped to the text.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let start = self.line_start(line);
        let rest = &self.text[start..];
        let line_end = rest.find('\n').map_or(self.text.len(), |i| start + i);
        self.text[start..line_end]
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(line_end, |(i, _)| start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_from_one() {
        let source = Source::new("t", "ab\nçd\n", Format::Yaml);
        assert_eq!(source.line_col(0), LineCol { line: 1, column: 1 });
        assert_eq!(source.line_col(3), LineCol { line: 2, column: 1 });
        // 'ç' is two bytes; 'd' starts at byte 5 and is the second character.
        assert_eq!(source.line_col(5), LineCol { line: 2, column: 2 });
        assert_eq!(source.line_col(4), LineCol { line: 2, column: 1 });
        assert_eq!(source.line_col(999), LineCol { line: 3, column: 1 });
        assert_eq!(source.offset_of(2, 2), 5);
    }

    #[test]
    fn format_follows_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.yml")), Some(Format::Yaml));
        assert_eq!(Format::from_path(Path::new("b.cnn")), Some(Format::Dsl));
        assert_eq!(Format::from_path(Path::new("b.txt")), None);
    }
}

//! Byte offsets to the protocol's positions and back: lines from 0, columns in UTF-16 code
//! units (LSP's default encoding). Positions past a line's end or the text's end are clamped, so
//! a client that is out of step gets the nearest place, not a panic.

use lsp_types::{Position, Range};

/// The start of every line of one text.
#[derive(Clone, Debug)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// The position of byte `offset` of `text` (floored to a character boundary).
    pub fn position(&self, text: &str, offset: usize) -> Position {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset) - 1;
        let column = text[self.starts[line]..offset].encode_utf16().count();
        Position::new(
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(column).unwrap_or(u32::MAX),
        )
    }

    /// The byte offset of `position` in `text`.
    pub fn offset(&self, text: &str, position: Position) -> usize {
        let Some(&start) = self.starts.get(position.line as usize) else {
            return text.len();
        };
        let line = &text[start..];
        let line = &line[..line.find('\n').unwrap_or(line.len())];
        let mut units = 0;
        for (i, c) in line.char_indices() {
            if units >= position.character as usize {
                return start + i;
            }
            units += c.len_utf16();
        }
        start + line.len()
    }

    /// The range of bytes `start..end` of `text`.
    pub fn range(&self, text: &str, start: usize, end: usize) -> Range {
        Range::new(self.position(text, start), self.position(text, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_utf16_units_and_round_trip() {
        let text = "ab\n🙂x\n\nlast";
        let index = LineIndex::new(text);
        assert_eq!(index.position(text, 0), Position::new(0, 0));
        assert_eq!(index.position(text, 3), Position::new(1, 0));
        // The emoji is four bytes and two UTF-16 units.
        assert_eq!(index.position(text, 7), Position::new(1, 2));
        assert_eq!(
            index.position(text, 5),
            Position::new(1, 0),
            "inside a character"
        );
        for offset in [0, 2, 3, 7, 8, 9, 10, text.len()] {
            assert_eq!(index.offset(text, index.position(text, offset)), offset);
        }
        assert_eq!(
            index.offset(text, Position::new(0, 99)),
            2,
            "past the line's end"
        );
        assert_eq!(index.offset(text, Position::new(99, 0)), text.len());
    }
}

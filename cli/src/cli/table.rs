//! Table cells padded by hand to their column's width: `format!`'s `{:<width$}` panics past
//! 65,535 columns, and a cell may hold a name read from a file (a layer, a class) of any length.

/// Which side of its padding a cell sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Text first, spaces after.
    Left,
    /// Spaces first, text after.
    Right,
}

/// `cell` padded with spaces to `width` characters; a cell at least that wide is left whole.
pub fn pad(cell: &str, width: usize, align: Align) -> String {
    let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
    match align {
        Align::Left => format!("{cell}{fill}"),
        Align::Right => format!("{fill}{cell}"),
    }
}

/// The width, in characters, of the widest of `cells` (0 for none).
pub fn widest<S: AsRef<str>>(cells: &[S]) -> usize {
    cells
        .iter()
        .map(|cell| cell.as_ref().chars().count())
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_padded_on_either_side_by_characters() {
        assert_eq!(pad("ab", 4, Align::Left), "ab  ");
        assert_eq!(pad("ab", 4, Align::Right), "  ab");
        assert_eq!(pad("čž", 3, Align::Left), "čž ");
        assert_eq!(pad("wide", 2, Align::Right), "wide");
        assert_eq!(widest(&["a", "čžš", "bb"]), 3);
        assert_eq!(widest::<&str>(&[]), 0);
    }

    #[test]
    fn widths_past_format_limit_work() {
        let long = "x".repeat(70_000);
        let padded = pad("short", long.len(), Align::Left);
        assert_eq!(padded.len(), 70_000);
        assert!(padded.starts_with("short "));
        assert_eq!(pad(&long, 10, Align::Right), long);
    }
}

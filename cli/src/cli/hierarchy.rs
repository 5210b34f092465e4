//! The module hierarchy of a model, read from its layers' dotted names as PyTorch's module tree
//! is (`layer1.0.conv1` lives in module `layer1.0`, in `layer1`): what `summary --depth` and
//! `draw --depth` collapse. Kept flat (rows in pre-order with their depth), so that nothing
//! recurses on a depth the spec's names choose.

use std::ops::Range;

/// Deepest nesting read from a name; the rest of a longer name stays in its last part, so that
/// a name of a thousand dots costs no more than a real model's.
pub const MAX_NESTING: usize = 32;

/// One row of the hierarchy: a group (a module with children) or a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// 1 for the model's own children, 2 for theirs, and so on (torchinfo's depth).
    pub depth: usize,
    /// The name relative to the enclosing group (`conv1` in `layer1.0`; the full name at the
    /// top).
    pub label: String,
    /// The layers this row stands for: one for a layer, a group's contiguous run.
    pub layers: Range<usize>,
    /// Whether it is a group (its layers are its descendants), not a layer.
    pub group: bool,
    /// Whether another row of the same group follows its subtree (how trees are drawn).
    pub has_next_sibling: bool,
}

impl Row {
    /// The group's full dotted name (`layer1.0`), or the layer's.
    pub fn full_name<'a>(&self, names: &'a [&'a str]) -> String {
        if self.group {
            let segments = self.depth.min(MAX_NESTING);
            names[self.layers.start]
                .split('.')
                .take(segments)
                .collect::<Vec<_>>()
                .join(".")
        } else {
            names[self.layers.start].to_owned()
        }
    }
}

/// The hierarchy of layers named `names`, in layer order: every layer's row is preceded by the
/// rows of the groups its name puts it in (those not already open). A group is a contiguous run
/// of layers sharing a prefix; a prefix that comes back after other layers opens a second group
/// of the same name, as a module called twice would appear in torchinfo.
pub fn rows(names: &[&str]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::with_capacity(names.len());
    // The open groups: (their last path segment, their row index).
    let mut open: Vec<(&str, usize)> = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let segments: Vec<&str> = name.splitn(MAX_NESTING + 1, '.').collect();
        let parents = &segments[..segments.len() - 1];
        let kept = open
            .iter()
            .zip(parents)
            .take_while(|((segment, _), parent)| segment == *parent)
            .count();
        open.truncate(kept);
        for (depth, segment) in parents.iter().enumerate().skip(kept) {
            open.push((segment, rows.len()));
            rows.push(Row {
                depth: depth + 1,
                label: (*segment).to_owned(),
                layers: index..index,
                group: true,
                has_next_sibling: false,
            });
        }
        for &(_, row) in &open {
            rows[row].layers.end = index + 1;
        }
        rows.push(Row {
            depth: parents.len() + 1,
            label: segments[segments.len() - 1].to_owned(),
            layers: index..index + 1,
            group: false,
            has_next_sibling: false,
        });
    }
    // Backwards: a row has a next sibling when a row of its depth came after it before any
    // shallower one.
    let mut seen: Vec<bool> = Vec::new();
    for row in rows.iter_mut().rev() {
        seen.resize(row.depth + 1, false);
        row.has_next_sibling = seen[row.depth];
        seen[row.depth] = true;
    }
    rows
}

/// The rows shown at `max_depth`: those no deeper. A group at `max_depth` stands collapsed for
/// its layers.
pub fn visible(rows: &[Row], max_depth: usize) -> impl Iterator<Item = &Row> {
    rows.iter().filter(move |row| row.depth <= max_depth)
}

/// The tree-drawing prefix of each row of `rows` (in order, all of them shown): nothing at the
/// top level, then `├─`/`└─` under a group with `│ ` for each enclosing group that goes on.
pub fn prefixes<'a>(rows: impl Iterator<Item = &'a Row>) -> Vec<String> {
    // Whether the latest row at each depth has a sibling after it.
    let mut goes_on: Vec<bool> = Vec::new();
    rows.map(|row| {
        goes_on.resize(row.depth + 1, false);
        goes_on[row.depth] = row.has_next_sibling;
        let mut prefix = String::new();
        for &more in goes_on.iter().take(row.depth).skip(2) {
            prefix.push_str(if more { "│ " } else { "  " });
        }
        if row.depth > 1 {
            prefix.push_str(if row.has_next_sibling {
                "├─"
            } else {
                "└─"
            });
        }
        prefix
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(names: &[&str], depth: usize) -> String {
        let rows = rows(names);
        let shown: Vec<&Row> = visible(&rows, depth).collect();
        let prefixes = prefixes(shown.iter().copied());
        shown
            .iter()
            .zip(prefixes)
            .map(|(row, prefix)| {
                let what = if row.group { "group" } else { "layer" };
                format!("{prefix}{} {what} {:?}\n", row.label, row.layers)
            })
            .collect()
    }

    #[test]
    fn groups_follow_dotted_names() {
        let names = [
            "conv1",
            "layer1.0.conv1",
            "layer1.0.bn1",
            "layer1.1.conv1",
            "layer2.0.conv1",
            "layer2.0.downsample.0",
            "layer2.0.downsample.1",
            "layer2.0.add",
            "fc",
        ];
        assert_eq!(
            shown(&names, 9),
            "conv1 layer 0..1\n\
             layer1 group 1..4\n\
             ├─0 group 1..3\n\
             │ ├─conv1 layer 1..2\n\
             │ └─bn1 layer 2..3\n\
             └─1 group 3..4\n\
             \x20 └─conv1 layer 3..4\n\
             layer2 group 4..8\n\
             └─0 group 4..8\n\
             \x20 ├─conv1 layer 4..5\n\
             \x20 ├─downsample group 5..7\n\
             \x20 │ ├─0 layer 5..6\n\
             \x20 │ └─1 layer 6..7\n\
             \x20 └─add layer 7..8\n\
             fc layer 8..9\n"
        );
        assert_eq!(
            shown(&names, 2),
            "conv1 layer 0..1\n\
             layer1 group 1..4\n\
             ├─0 group 1..3\n\
             └─1 group 3..4\n\
             layer2 group 4..8\n\
             └─0 group 4..8\n\
             fc layer 8..9\n"
        );
        let rows = rows(&names);
        let downsample = rows.iter().find(|r| r.label == "downsample").unwrap();
        assert_eq!(downsample.full_name(&names), "layer2.0.downsample");
    }

    #[test]
    fn a_prefix_that_comes_back_opens_a_second_group() {
        let names = ["a.x", "b", "a.y", "a"];
        assert_eq!(
            shown(&names, 3),
            "a group 0..1\n└─x layer 0..1\nb layer 1..2\na group 2..3\n└─y layer 2..3\na layer 3..4\n"
        );
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = vec!["x"; 1000].join(".");
        let rows = rows(&[deep.as_str()]);
        assert_eq!(rows.len(), MAX_NESTING + 1);
        let leaf = rows.last().unwrap();
        assert_eq!(leaf.depth, MAX_NESTING + 1);
        assert_eq!(leaf.label.split('.').count(), 1000 - MAX_NESTING);
    }
}

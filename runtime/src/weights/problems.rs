//! What can be wrong with a weights file, each problem worded once, and the error that lists
//! them all (with what to do) when a file cannot be loaded.

use std::borrow::Cow;
use std::fmt;
use std::path::PathBuf;

/// Most problems a [`LoadError`] lists; the rest are counted (a header can list 100,000
/// tensors the model lacks).
pub const MAX_LISTED_PROBLEMS: usize = 20;

/// Most characters of a name from a file that a message quotes.
const MAX_SHOWN_CHARS: usize = 100;

/// Most dimensions of a shape from a file that a message lists.
const MAX_SHOWN_DIMS: usize = 8;

/// A name from a file as messages quote it: whole, or its first [`MAX_SHOWN_CHARS`] characters
/// and its length (a header may hold a name of 100 MB).
pub(crate) fn shown(name: &str) -> Cow<'_, str> {
    match name.char_indices().nth(MAX_SHOWN_CHARS) {
        None => Cow::Borrowed(name),
        Some((end, _)) => Cow::Owned(format!("{}... ({} bytes)", &name[..end], name.len())),
    }
}

/// A shape from a file as messages list it: `[2, 3]`, or its first [`MAX_SHOWN_DIMS`]
/// dimensions and how many there are.
pub(crate) fn dims(shape: &[usize]) -> String {
    if shape.len() <= MAX_SHOWN_DIMS {
        return format!("{shape:?}");
    }
    let first: Vec<String> = shape[..MAX_SHOWN_DIMS]
        .iter()
        .map(usize::to_string)
        .collect();
    format!("[{}, ...] ({} dimensions)", first.join(", "), shape.len())
}

/// One thing wrong with a weights file, as [`LoadError`] lists them.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoadProblem {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// The file is not a well-formed safetensors file (truncated, bad header, bad offsets).
    #[error("not a valid safetensors file: {0}")]
    Corrupt(String),
    /// The header lists more than cnnc reads: too many tensors, or too much metadata.
    #[error("the header is too large to read: {0}")]
    Limit(String),
    /// The model has an entry the file lacks.
    #[error("missing tensor `{}` (the model expects {dtype} {})", shown(.name), dims(.shape))]
    Missing {
        /// State-dict name.
        name: String,
        /// Expected dtype.
        dtype: &'static str,
        /// Expected shape.
        shape: Vec<usize>,
    },
    /// The file has a tensor the model does not.
    #[error(
        "unexpected tensor `{}` ({} {}): the model has no such entry",
        shown(.name),
        shown(.dtype),
        dims(.shape)
    )]
    Unexpected {
        /// Name in the file.
        name: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error(
        "tensor `{}` has shape {}, the model expects {}",
        shown(.name),
        dims(.found),
        dims(.expected)
    )]
    Shape {
        /// State-dict name.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error(
        "tensor `{}` has dtype {}, the model expects {expected}",
        shown(.name),
        shown(.found)
    )]
    Dtype {
        /// State-dict name.
        name: String,
        /// The dtype the model needs.
        expected: &'static str,
        /// The file's dtype.
        found: String,
    },
    /// A float tensor holds NaN or infinite values.
    #[error(
        "tensor `{}` holds {count} non-finite value(s), the first ({value}) at index {}",
        shown(.name),
        dims(.index)
    )]
    NonFinite {
        /// State-dict name.
        name: String,
        /// How many values are NaN or infinite.
        count: usize,
        /// The first of them.
        value: f32,
        /// Its index.
        index: Vec<usize>,
    },
    /// The model itself yields two entries under one name, so no file can load into it.
    #[error("the model has more than one entry named `{}`", shown(.name))]
    DuplicateEntry {
        /// The repeated name.
        name: String,
    },
}

/// Why a weights or tensor file could not be loaded: every problem found, with the file's path.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("cannot load `{}`: {}", path.display(), ProblemList(problems))]
pub struct LoadError {
    /// The file.
    pub path: PathBuf,
    /// Every problem found (at least one).
    pub problems: Vec<LoadProblem>,
}

impl LoadProblem {
    /// What to do about this problem, where the problem itself does not say.
    pub fn fix(&self) -> Option<&'static str> {
        match self {
            LoadProblem::Dtype {
                expected: "F32", ..
            } => Some("convert the tensors to float32 before saving (PyTorch: `model.float()`)"),
            LoadProblem::Dtype {
                expected: "I64", ..
            } => Some("save counters such as `num_batches_tracked` as int64, as PyTorch does"),
            LoadProblem::NonFinite { .. } => Some(
                "the file is damaged or was saved from a diverged run: use an earlier checkpoint",
            ),
            _ => None,
        }
    }
}

struct ProblemList<'a>(&'a [LoadProblem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => {
                write!(f, "{one}")?;
                one.fix().map_or(Ok(()), |fix| write!(f, "; {fix}"))
            }
            many => {
                write!(f, "{} problems", many.len())?;
                let listed = &many[..many.len().min(MAX_LISTED_PROBLEMS)];
                listed.iter().try_for_each(|p| write!(f, "\n  - {p}"))?;
                if many.len() > listed.len() {
                    write!(f, "\n  - and {} more", many.len() - listed.len())?;
                }
                // Each fix once, in the order its problems first appear.
                let mut fixes: Vec<&str> = Vec::new();
                for fix in many.iter().filter_map(LoadProblem::fix) {
                    if !fixes.contains(&fix) {
                        fixes.push(fix);
                    }
                }
                fixes
                    .iter()
                    .try_for_each(|fix| write!(f, "\n  help: {fix}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_problem_reads_as_one_sentence() {
        let error = LoadError {
            path: PathBuf::from("w.safetensors"),
            problems: vec![LoadProblem::Corrupt("bad header".into())],
        };
        assert_eq!(
            error.to_string(),
            "cannot load `w.safetensors`: not a valid safetensors file: bad header"
        );
    }

    #[test]
    fn long_lists_names_and_shapes_are_cut() {
        let unexpected = |i: usize| LoadProblem::Unexpected {
            name: format!("extra.{i}"),
            dtype: "F32".into(),
            shape: vec![0],
        };
        let error = LoadError {
            path: PathBuf::from("w.safetensors"),
            problems: (0..1000).map(unexpected).collect(),
        };
        let text = error.to_string();
        assert_eq!(text.lines().count(), 1 + MAX_LISTED_PROBLEMS + 1, "{text}");
        assert!(text.starts_with("cannot load `w.safetensors`: 1000 problems\n"));
        assert!(text.ends_with("\n  - and 980 more"), "{text}");

        let long = LoadProblem::Unexpected {
            name: "n".repeat(1_000_000),
            dtype: "F32".into(),
            shape: vec![1; 1000],
        };
        let text = long.to_string();
        assert!(text.len() < 300, "{text}");
        assert!(text.contains("... (1000000 bytes)"), "{text}");
        assert!(
            text.contains("[1, 1, 1, 1, 1, 1, 1, 1, ...] (1000 dimensions)"),
            "{text}"
        );
    }
}

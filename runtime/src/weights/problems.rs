//! What can be wrong with a weights file, each problem worded once, and the error that lists
//! them all (with what to do) when a file cannot be loaded.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a weights file, as [`LoadError`] lists them.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LoadProblem {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Io(String),
    /// The file is not a well-formed safetensors file (truncated, bad header, bad offsets).
    #[error("not a valid safetensors file: {0}")]
    Corrupt(String),
    /// The model has an entry the file lacks.
    #[error("missing tensor `{name}` (the model expects {dtype} {shape:?})")]
    Missing {
        /// State-dict name.
        name: String,
        /// Expected dtype.
        dtype: &'static str,
        /// Expected shape.
        shape: Vec<usize>,
    },
    /// The file has a tensor the model does not.
    #[error("unexpected tensor `{name}` ({dtype} {shape:?}): the model has no such entry")]
    Unexpected {
        /// Name in the file.
        name: String,
        /// Its dtype.
        dtype: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, the model expects {expected:?}")]
    Shape {
        /// State-dict name.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor has the wrong element type.
    #[error("tensor `{name}` has dtype {found}, the model expects {expected}")]
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
        "tensor `{name}` holds {count} non-finite value(s), the first ({value}) at index {index:?}"
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
    #[error("the model has more than one entry named `{name}`")]
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
                many.iter().try_for_each(|p| write!(f, "\n  - {p}"))?;
                let mut fixes: Vec<&str> = many.iter().filter_map(LoadProblem::fix).collect();
                fixes.dedup();
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
}

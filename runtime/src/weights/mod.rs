//! Weights as safetensors files keyed by PyTorch state_dict names: saving a [`Visit`] model
//! (written atomically), loading strictly like `load_state_dict(strict=True)` (every problem
//! reported at once, the model untouched unless all is well), and plain named-tensor files for
//! checkpoints and fixtures.
//!
//! `container.rs` reads and validates the file format, `problems.rs` words what is wrong with a
//! file, `load.rs` fits a file to a model, and `save.rs` writes one.
//!
//! [`Visit`]: crate::param::Visit

mod container;
mod load;
mod problems;
mod save;

use std::collections::BTreeMap;

use ndarray::ArrayD;

pub use container::{MAX_HEADER_BYTES, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_TENSORS};
pub use load::{load, load_bytes, parse_tensors, read_tensors};
pub use problems::{LoadError, LoadProblem, MAX_LISTED_PROBLEMS};
pub use save::{SaveError, save, save_ref, serialize, state_dict, state_dict_ref, write_tensors};

/// The atomic writes, kept under their old path for the callers that name them here.
pub use crate::fsio::{is_temp_file_of, sync_dir, write_atomic};

/// A tensor as stored in a safetensors file: the element types cnnc reads and writes.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// `F32`: parameters and float buffers.
    F32(ArrayD<f32>),
    /// `F64`: read only (fixtures); never written by cnnc's models.
    F64(ArrayD<f64>),
    /// `I64`: counters such as `num_batches_tracked` (0-d, as PyTorch saves them).
    I64(ArrayD<i64>),
}

impl TensorData {
    /// The safetensors dtype name (`F32`, `F64`, `I64`).
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::F64(_) => "F64",
            TensorData::I64(_) => "I64",
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            TensorData::F32(a) => a.shape(),
            TensorData::F64(a) => a.shape(),
            TensorData::I64(a) => a.shape(),
        }
    }

    fn element_size(&self) -> usize {
        match self {
            TensorData::F32(_) => 4,
            TensorData::F64(_) | TensorData::I64(_) => 8,
        }
    }

    /// Little-endian bytes in C order, whatever the array's memory layout.
    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            TensorData::F32(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorData::F64(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorData::I64(a) => a.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Named tensors and string metadata, as read from a safetensors file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorFile {
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorData>,
    /// The file's `__metadata__` strings (empty if it has none).
    pub metadata: BTreeMap<String, String>,
}

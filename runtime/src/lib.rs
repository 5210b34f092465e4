//! The cnnc numeric runtime: ndarray tensors, layers with forward and backward passes, losses,
//! optimizers, PyTorch-matching initialisation, safetensors weights and `.npy` I/O. Knows nothing
//! of parsing: models arrive as checked models of the shared layer table ([`cnnc_core`]), whose
//! resolved arguments are [`config`]. Datasets, image decoding and downloads live in the
//! `cnnc-data` crate, so numerics pull none of them.

pub mod error;
pub mod exec;
pub mod fsio;
pub mod init;
mod kernels;
pub mod layers;
pub mod loss;
pub mod model;
pub mod npy;
pub mod optim;
pub mod param;
pub mod peak;
pub mod schedule;
mod scratch;
mod simd;
pub mod tensor;
pub mod typed;
pub mod weights;

pub use cnnc_core::Shape;
pub use cnnc_core::config;
pub use error::{Error, Result};
pub use exec::{LayerTime, Network, NonFinite};
pub use layers::Layer;
pub use loss::softmax_cross_entropy;
pub use model::Model;
pub use param::{Entry, EntryRef, Param, Visit, VisitRef};
pub use tensor::Mode;

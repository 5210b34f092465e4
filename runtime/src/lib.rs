//! The cnnc numeric runtime: ndarray tensors, layers with forward and backward passes, losses,
//! optimizers, PyTorch-matching initialisation, safetensors weights I/O and datasets. Knows nothing
//! of parsing: models arrive as plain numeric layer descriptions ([`config`]).

pub mod config;
pub mod param;

//! Per-sample shapes and the windows of convolution and pooling: the shared definitions of
//! [`cnnc_core`], which every stage reads.

pub use cnnc_core::geometry::{Slide, Window};
pub use cnnc_core::shape::Shape;

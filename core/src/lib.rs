//! What every cnnc stage shares, each piece of knowledge once: the layer table (each kind's
//! keyword, PyTorch class, arguments, shape rule, state_dict tensors, mult-adds and init), the
//! output-size geometry as `const fn`s, the checked model whose invariants hold by construction,
//! its canonical text form, and the execution plan (fusion, buffers, gradient buffers) that the
//! dynamic executor interprets and code generation emits. It depends on nothing, so the spec
//! front-end, the code generator and the numeric runtime can all read it.

pub mod canon;
pub mod config;
pub mod geometry;
pub mod kind;
pub mod model;
pub mod plan;
pub mod shape;

pub use config::ConvTranspose2dConfig;
pub use config::{
    BatchNorm2dConfig, ConcatConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef,
    PaddingMode, Pair, Pool2dConfig, Source,
};
pub use kind::{ArgDefault, ArgInfo, ArgType, ArgValue, Arity, Init, Input, LayerKind};
pub use model::{CheckedLayer, Model, ModelError, TensorInfo, TensorRole};
pub use plan::{
    Clamp, Epilogue, Fusion, Grad, GradTo, Join, JoinedAdd, JoinedNormGrad, Plan, Reads, Slice,
    Step, Storage,
};
pub use shape::Shape;

/// Largest size (channels, features, height, kernel, ...) a spec may use: 2^20.
pub const MAX_DIM: usize = 1 << 20;
/// Largest element count of any single tensor (activation or parameter): 2^31.
pub const MAX_ELEMENTS: u64 = 1 << 31;
/// Most positions in one `maxpool2d` window (`kernel_size[0] * kernel_size[1]`): the runtime
/// records where each window's maximum lies in 16 bits, as PyTorch records its indices.
pub const MAX_POOL_WINDOW: usize = 65_534;

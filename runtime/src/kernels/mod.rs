//! The numeric kernels, apart from the layers that call them: matrix tiles ([`gemm`]), pooling
//! windows ([`window`]), each a safe front over SIMD versions chosen at run time, and `exp` and
//! `erf` that vectorise ([`math`]).

pub(crate) mod gemm;
pub(crate) mod math;
pub(crate) mod window;

//! The numeric kernels, apart from the layers that call them: matrix tiles ([`gemm`]), pooling
//! windows ([`window`]), depthwise convolution stencils ([`depthwise`]), each a safe front over
//! SIMD versions chosen at run time, and `exp`, `erf` and `tanh` that vectorise ([`math`]).

pub(crate) mod depthwise;
pub(crate) mod gemm;
pub(crate) mod math;
pub(crate) mod window;

//! The numeric kernels, apart from the layers that call them: matrix tiles ([`gemm`]) and pooling
//! windows ([`window`]), each a safe front over SIMD versions chosen at run time.

pub(crate) mod gemm;
pub(crate) mod window;

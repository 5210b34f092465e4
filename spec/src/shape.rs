//! Per-sample tensor shapes and PyTorch's output-size formulas for convolution and pooling
//! (`aten/src/ATen/native/Pool.h`, `pooling_output_shape`), in exact integer arithmetic.

use std::fmt;

use serde::Serialize;

/// A per-sample shape; the batch dimension is symbolic and never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `[channels, height, width]`.
    Chw([usize; 3]),
    /// `[features]`.
    Flat(usize),
}

impl Shape {
    /// The dimensions, `[C, H, W]` or `[N]`.
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Shape::Chw(d) => d.to_vec(),
            Shape::Flat(n) => vec![n],
        }
    }

    /// Number of elements per sample (saturating; shapes are checked far below overflow).
    pub fn numel(&self) -> usize {
        match *self {
            Shape::Chw([c, h, w]) => c.saturating_mul(h).saturating_mul(w),
            Shape::Flat(n) => n,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Chw([c, h, w]) => write!(f, "[{c}, {h}, {w}]"),
            Shape::Flat(n) => write!(f, "[{n}]"),
        }
    }
}

impl Serialize for Shape {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.dims().serialize(serializer)
    }
}

/// One spatial dimension of a convolution or pooling window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding on each side.
    pub padding: usize,
    /// Dilation (1 for pooling here).
    pub dilation: usize,
    /// Round the output size up (pooling's `ceil_mode`).
    pub ceil_mode: bool,
}

/// The outcome of sliding a [`Window`] over one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slide {
    /// Output size; may be below 1, which PyTorch rejects.
    pub output: i128,
    /// Input rows/columns (not padding) that no window reaches, PyTorch's silent floor.
    pub dropped: usize,
}

impl Window {
    /// Span of the dilated kernel, `dilation * (kernel - 1) + 1`.
    pub fn effective_kernel(&self) -> i128 {
        self.dilation as i128 * (self.kernel as i128 - 1) + 1
    }

    /// Output size over an input of `input`, exactly as PyTorch computes it:
    /// `floor((in + 2p - d(k-1) - 1) / s) + 1`, and with `ceil_mode` rounded up unless the
    /// last window would start in the right padding.
    pub fn slide(&self, input: usize) -> Slide {
        let input = input as i128;
        let padding = self.padding as i128;
        let stride = (self.stride as i128).max(1);
        let span = input + 2 * padding - self.effective_kernel();
        let round_up = if self.ceil_mode { stride - 1 } else { 0 };
        let mut output = (span + round_up).div_euclid(stride) + 1;
        if self.ceil_mode && (output - 1) * stride >= input + padding {
            output -= 1;
        }
        let dropped = if span >= 0 && !self.ceil_mode {
            // The last `span % stride` padded positions are never covered; the ones that are
            // real input (not right padding) are lost.
            usize::try_from((span % stride - padding).max(0)).unwrap_or(0)
        } else {
            0
        };
        Slide { output, dropped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Window {
        Window {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode: false,
        }
    }

    fn pool(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Window {
        Window {
            kernel,
            stride,
            padding,
            dilation: 1,
            ceil_mode,
        }
    }

    // Expected sizes from PyTorch 2.15 (tools/.venv):
    //   import torch; nn = torch.nn
    //   nn.Conv2d(1, 1, 5, padding=2)(torch.zeros(1, 1, 32, 32)).shape[-1]          # 32
    //   nn.Conv2d(1, 1, 3, stride=2)(torch.zeros(1, 1, 32, 32)).shape[-1]           # 15
    //   nn.Conv2d(1, 1, 3, stride=2, padding=1)(torch.zeros(1, 1, 7, 7)).shape[-1]  # 4
    //   nn.Conv2d(1, 1, 3, dilation=2)(torch.zeros(1, 1, 10, 10)).shape[-1]         # 6
    //   nn.Conv2d(1, 1, 3, stride=3, padding=1, dilation=3)(torch.zeros(1,1,28,28)).shape[-1]  # 8
    //   nn.Conv2d(1, 1, 7, stride=2, padding=3)(torch.zeros(1, 1, 224, 224)).shape[-1]  # 112
    #[test]
    fn conv_output_sizes_match_pytorch() {
        assert_eq!(conv(5, 1, 2, 1).slide(32).output, 32);
        assert_eq!(conv(3, 2, 0, 1).slide(32).output, 15);
        assert_eq!(conv(3, 2, 1, 1).slide(7).output, 4);
        assert_eq!(conv(3, 1, 0, 2).slide(10).output, 6);
        assert_eq!(conv(3, 3, 1, 3).slide(28).output, 8);
        assert_eq!(conv(7, 2, 3, 1).slide(224).output, 112);
        // A kernel larger than the padded input: PyTorch raises "Kernel size can't be greater
        // than actual input size".
        assert!(conv(5, 1, 0, 1).slide(3).output < 1);
    }

    //   nn.MaxPool2d(2)(torch.zeros(1, 1, 32, 32)).shape[-1]                        # 16
    //   nn.MaxPool2d(2)(torch.zeros(1, 1, 15, 15)).shape[-1]                        # 7
    //   nn.MaxPool2d(2, ceil_mode=True)(torch.zeros(1, 1, 15, 15)).shape[-1]        # 8
    //   nn.MaxPool2d(3, 2)(torch.zeros(1, 1, 112, 112)).shape[-1]                   # 55
    //   nn.MaxPool2d(3, 2, ceil_mode=True)(torch.zeros(1, 1, 112, 112)).shape[-1]   # 56
    //   nn.MaxPool2d(3, 2, padding=1)(torch.zeros(1, 1, 112, 112)).shape[-1]        # 56
    //   nn.MaxPool2d(2, 2, padding=1, ceil_mode=True)(torch.zeros(1, 1, 5, 5)).shape[-1]  # 3
    //   nn.AvgPool2d(3, 3, ceil_mode=True)(torch.zeros(1, 1, 10, 10)).shape[-1]     # 4
    #[test]
    fn pool_output_sizes_match_pytorch() {
        assert_eq!(pool(2, 2, 0, false).slide(32).output, 16);
        assert_eq!(pool(2, 2, 0, false).slide(15).output, 7);
        assert_eq!(pool(2, 2, 0, true).slide(15).output, 8);
        assert_eq!(pool(3, 2, 0, false).slide(112).output, 55);
        assert_eq!(pool(3, 2, 0, true).slide(112).output, 56);
        assert_eq!(pool(3, 2, 1, false).slide(112).output, 56);
        // ceil_mode would give 4, but that window would start in the right padding.
        assert_eq!(pool(2, 2, 1, true).slide(5).output, 3);
        assert_eq!(pool(3, 3, 0, true).slide(10).output, 4);
    }

    #[test]
    fn dropped_rows_count_only_real_input() {
        assert_eq!(pool(2, 2, 0, false).slide(15).dropped, 1);
        assert_eq!(pool(2, 2, 0, false).slide(16).dropped, 0);
        assert_eq!(pool(2, 2, 0, true).slide(15).dropped, 0);
        // 3x3 stride 2 pad 1 over 8: span 7, 7 % 2 = 1 position uncovered, and it is padding.
        assert_eq!(conv(3, 2, 1, 1).slide(8).dropped, 0);
        assert_eq!(conv(3, 2, 0, 1).slide(32).dropped, 1);
    }
}

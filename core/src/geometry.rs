//! PyTorch's output-size formulas for convolution and pooling, each written once
//! (`aten/src/ATen/native/Pool.h`, `pooling_output_shape`), in exact integer arithmetic. The
//! checker, the runtime's layer constructors, the plan and code generation all call these.

/// The padding along one axis: before the input (top or left) and after it (bottom or right).
/// Equal on both sides except for a convolution's `padding: same` with an odd total, where
/// PyTorch pads the extra pixel after the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pad {
    /// Pixels before the input (top or left).
    pub before: usize,
    /// Pixels after the input (bottom or right).
    pub after: usize,
}

/// The padding's term in PyTorch's output-size formula: `2*p` when both sides are equal,
/// `before+after` otherwise (`0+1`).
impl std::fmt::Display for Pad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.before == self.after {
            write!(f, "2*{}", self.before)
        } else {
            write!(f, "{}+{}", self.before, self.after)
        }
    }
}

impl Pad {
    /// `padding` pixels on each side.
    pub const fn even(padding: usize) -> Pad {
        Pad {
            before: padding,
            after: padding,
        }
    }

    /// Both sides together, saturating (sizes this large are refused anyway).
    pub const fn total(self) -> usize {
        self.before.saturating_add(self.after)
    }
}

/// `padding='same'` along one axis, PyTorch's rule (`_reversed_padding_repeated_twice` in
/// `torch/nn/modules/conv.py`): `dilation * (kernel - 1)` pixels in all, half of them (rounded
/// down) before the input and the rest after it. Only meaningful with stride 1, where the
/// output keeps the input's size.
pub const fn same_padding(kernel: usize, dilation: usize) -> Pad {
    let total = dilation.saturating_mul(kernel.saturating_sub(1));
    Pad {
        before: total / 2,
        after: total - total / 2,
    }
}

/// Output length along one axis of a window sliding over `input` padded by `padding`:
/// `floor((in + before + after - d(k-1) - 1) / s) + 1`, and with `ceil_mode` rounded up unless
/// the last window would start in the right padding. May be below 1, which PyTorch rejects; a
/// stride of 0 counts as 1 (the checker refuses it before).
pub const fn window_output(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: Pad,
    dilation: usize,
    ceil_mode: bool,
) -> i128 {
    let input = input as i128;
    let before = padding.before as i128;
    let stride = if stride == 0 { 1 } else { stride as i128 };
    let span = input + before + padding.after as i128 - effective_kernel(kernel, dilation);
    let round_up = if ceil_mode { stride - 1 } else { 0 };
    let mut output = (span + round_up).div_euclid(stride) + 1;
    if ceil_mode && (output - 1) * stride >= input + before {
        output -= 1;
    }
    output
}

/// Span of a dilated kernel, `dilation * (kernel - 1) + 1`.
pub const fn effective_kernel(kernel: usize, dilation: usize) -> i128 {
    dilation as i128 * (kernel as i128 - 1) + 1
}

/// Converts [`window_output`] to a size: `None` when no window fits or an argument is 0.
const fn positive(kernel: usize, stride: usize, dilation: usize, output: i128) -> Option<usize> {
    if kernel == 0 || stride == 0 || dilation == 0 || output < 1 || output > usize::MAX as i128 {
        None
    } else {
        Some(output as usize)
    }
}

/// `torch.nn.Conv2d`'s output length along one axis, padded by `padding` (only its total
/// matters); `None` when the kernel does not fit.
pub const fn conv_output(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: Pad,
    dilation: usize,
) -> Option<usize> {
    let output = window_output(input, kernel, stride, padding, dilation, false);
    positive(kernel, stride, dilation, output)
}

/// `torch.nn.MaxPool2d` / `AvgPool2d`'s output length along one axis (average pooling's
/// `dilation` is 1); `None` when the window does not fit.
pub const fn pool_output(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ceil_mode: bool,
) -> Option<usize> {
    let output = window_output(
        input,
        kernel,
        stride,
        Pad::even(padding),
        dilation,
        ceil_mode,
    );
    positive(kernel, stride, dilation, output)
}

/// Whether a max pool's windows tile an `[h, w]` image exactly (`stride == kernel_size`, no
/// padding, `h` and `w` multiples of the kernel's, and a window small enough for the 16-bit
/// positions): the condition under which a convolution applies the pool itself.
pub const fn pool_tiles(
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
) -> bool {
    let [kh, kw] = kernel;
    kh > 0
        && kw > 0
        && stride[0] == kh
        && stride[1] == kw
        && padding[0] == 0
        && padding[1] == 0
        && input[0].is_multiple_of(kh)
        && input[1].is_multiple_of(kw)
        && kh * kw <= crate::MAX_POOL_WINDOW
}

/// One spatial dimension of a convolution or pooling window, for the checker's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Padding before and after the input.
    pub padding: Pad,
    /// Dilation (1 for pooling).
    pub dilation: usize,
    /// Round the output size up (pooling's `ceil_mode`).
    pub ceil_mode: bool,
}

/// The outcome of sliding a [`Window`] over one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slide {
    /// Output size; may be below 1, which PyTorch rejects.
    pub output: i128,
    /// Input rows/columns (not padding) after the last window that no window reaches,
    /// PyTorch's silent floor.
    pub dropped: usize,
    /// Input rows/columns (not padding) between windows that no window reaches, when the
    /// stride exceeds the (dilated) kernel.
    pub skipped: usize,
}

impl Window {
    /// Span of the dilated kernel, `dilation * (kernel - 1) + 1`.
    pub fn effective_kernel(&self) -> i128 {
        effective_kernel(self.kernel, self.dilation)
    }

    /// The window slid over `input`: its output size ([`window_output`]) and the real input
    /// positions no window covers.
    pub fn slide(&self, input: usize) -> Slide {
        let output = window_output(
            input,
            self.kernel,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
        );
        let (mut dropped, mut skipped) = (0, 0);
        if output >= 1 {
            let stride = (self.stride as i128).max(1);
            let padding = self.padding.before as i128;
            let real = |from: i128, to: i128| (to.min(input as i128) - from.max(0)).max(0);
            let kernel = self.effective_kernel();
            // Between consecutive windows: from the end of one to the start of the next.
            if stride > kernel {
                let gaps: i128 = (0..output - 1)
                    .map(|j| real(j * stride - padding + kernel, (j + 1) * stride - padding))
                    .sum();
                skipped = usize::try_from(gaps).unwrap_or(0);
            }
            let last_end = (output - 1) * stride - padding + kernel;
            dropped = usize::try_from(real(last_end, input as i128)).unwrap_or(0);
        }
        Slide {
            output,
            dropped,
            skipped,
        }
    }
}

/// The input rows (or columns) `start..end` that adaptive pooling's output index `i` of
/// `output` covers over `input`: PyTorch's `start = floor(i * in / out)`,
/// `end = ceil((i + 1) * in / out)` (`aten/src/ATen/native/AdaptivePooling.h`), so sizes that do
/// not divide still match. Never empty when `input` and `output` are at least 1.
pub const fn adaptive_window(i: usize, input: usize, output: usize) -> (usize, usize) {
    let (i, input, output) = (i as u128, input as u128, output as u128);
    let start = i * input / output;
    let end = ((i + 1) * input).div_ceil(output);
    (start as usize, end as usize)
}

/// The input row (or column) that nearest upsampling by the integer `scale_factor` reads for
/// output index `dst`: PyTorch's `nearest_idx` (`aten/src/ATen/native/UpSample.h`), which halves
/// for a factor of 2 and otherwise takes `floor(dst * (1 / scale_factor))` in f32, clamped to the
/// last input index. Written in PyTorch's arithmetic so rounding picks the same pixel.
pub fn nearest_source(dst: usize, input: usize, scale_factor: usize) -> usize {
    nearest_sized_source(
        dst,
        input,
        input.saturating_mul(scale_factor),
        Some(scale_factor),
    )
}

/// [`nearest_source`] for an output of `output` pixels: PyTorch's `nearest_idx` with its
/// `scales` argument, the written integer `scale_factor`, or `None` when the output comes from
/// `size` (the scale is then `input / output` in f32, so shrinking and non-integer ratios
/// pick PyTorch's pixels too).
pub fn nearest_sized_source(
    dst: usize,
    input: usize,
    output: usize,
    scale_factor: Option<usize>,
) -> usize {
    let last = input.saturating_sub(1);
    if output == input {
        return dst.min(last);
    }
    if output == input.saturating_mul(2) {
        return (dst >> 1).min(last);
    }
    let scale = source_scale(input, output, scale_factor);
    ((dst as f32 * scale).floor() as usize).min(last)
}

/// PyTorch's `compute_scales_value` in f32: `1 / scale_factor` when one was written, else
/// `input / output`.
fn source_scale(input: usize, output: usize, scale_factor: Option<usize>) -> f32 {
    match scale_factor {
        Some(s) if s > 0 => (1.0 / s as f64) as f32,
        _ => input as f32 / output.max(1) as f32,
    }
}

/// The two input indices and their weights that bilinear upsampling interpolates for output
/// index `dst` along an axis of `input` pixels resized to `output`: PyTorch's
/// `area_pixel_compute_source_index` and `guard_index_and_lambda` in f32. With
/// `align_corners` the source is `dst * (input - 1) / (output - 1)`; without, `(dst + 0.5) *
/// scale - 0.5` clamped at 0, `scale` as in [`nearest_sized_source`]. Returns `(i0, i1, w0,
/// w1)`: `i1` is `i0 + 1` except at the last pixel.
pub fn linear_source(
    dst: usize,
    input: usize,
    output: usize,
    scale_factor: Option<usize>,
    align_corners: bool,
) -> (usize, usize, f32, f32) {
    let last = input.saturating_sub(1);
    let source = if align_corners {
        let scale = if output > 1 {
            last as f32 / (output - 1) as f32
        } else {
            0.0
        };
        scale * dst as f32
    } else {
        let scale = source_scale(input, output, scale_factor);
        (scale * (dst as f32 + 0.5) - 0.5).max(0.0)
    };
    let i0 = (source.floor() as usize).min(last);
    let w1 = (source - i0 as f32).clamp(0.0, 1.0);
    let i1 = if i0 < last { i0 + 1 } else { i0 };
    (i0, i1, 1.0 - w1, w1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(kernel: usize, stride: usize, padding: usize, dilation: usize) -> Window {
        Window {
            kernel,
            stride,
            padding: Pad::even(padding),
            dilation,
            ceil_mode: false,
        }
    }

    fn pool(kernel: usize, stride: usize, padding: usize, ceil_mode: bool) -> Window {
        Window {
            kernel,
            stride,
            padding: Pad::even(padding),
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
        assert_eq!(conv_output(224, 7, 2, Pad::even(3), 1), Some(112));
        assert_eq!(conv_output(28, 3, 3, Pad::even(1), 3), Some(8));
        // A kernel larger than the padded input: PyTorch raises "Kernel size can't be greater
        // than actual input size".
        assert!(conv(5, 1, 0, 1).slide(3).output < 1);
        assert_eq!(conv_output(3, 5, 1, Pad::even(0), 1), None);
        assert_eq!(conv_output(8, 3, 0, Pad::even(0), 1), None);
    }

    // padding='same' pads d(k-1) in all, the odd pixel after the input (PyTorch 2.15):
    //   nn.Conv2d(1, 1, 2, padding='same')._reversed_padding_repeated_twice       # [0, 1, 0, 1]
    //   nn.Conv2d(1, 1, 4, padding='same')._reversed_padding_repeated_twice       # [1, 2, 1, 2]
    //   nn.Conv2d(1, 1, 2, padding='same', dilation=3)._reversed_padding_repeated_twice  # [1, 2, 1, 2]
    //   nn.Conv2d(1, 1, 4, padding='same')(torch.zeros(1, 1, 7, 7)).shape[-1]     # 7
    #[test]
    fn same_padding_puts_the_odd_pixel_after_the_input() {
        let pad = |before, after| Pad { before, after };
        assert_eq!(same_padding(2, 1), pad(0, 1));
        assert_eq!(same_padding(4, 1), pad(1, 2));
        assert_eq!(same_padding(2, 3), pad(1, 2));
        assert_eq!(same_padding(3, 1), Pad::even(1));
        assert_eq!(same_padding(3, 2), Pad::even(2));
        assert_eq!(same_padding(1, 5), Pad::even(0));
        for (kernel, dilation) in [(2, 1), (4, 1), (2, 3), (5, 2), (6, 1)] {
            let padding = same_padding(kernel, dilation);
            assert_eq!(padding.total(), dilation * (kernel - 1));
            assert_eq!(conv_output(7, kernel, 1, padding, dilation), Some(7));
        }
        // The extra pixel after the input is covered: the last window starts at the last row.
        let slide = Window {
            kernel: 4,
            stride: 1,
            padding: same_padding(4, 1),
            dilation: 1,
            ceil_mode: false,
        }
        .slide(7);
        assert_eq!((slide.output, slide.dropped, slide.skipped), (7, 0, 0));
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
        assert_eq!(pool_output(5, 2, 2, 1, 1, true), Some(3));
        assert_eq!(pool_output(15, 2, 2, 0, 1, true), Some(8));
        assert_eq!(pool_output(1, 2, 2, 0, 1, false), None);
        // MaxPool2d(3, stride=1, dilation=2) on 7: a window spans 5, so 3 fit.
        assert_eq!(pool_output(7, 3, 1, 0, 2, false), Some(3));
        assert_eq!(pool_output(4, 3, 1, 0, 2, false), None);
    }

    #[test]
    fn uncovered_rows_count_only_real_input() {
        assert_eq!(pool(2, 2, 0, false).slide(15).dropped, 1);
        assert_eq!(pool(2, 2, 0, false).slide(16).dropped, 0);
        assert_eq!(pool(2, 2, 0, true).slide(15).dropped, 0);
        // 3x3 stride 2 pad 1 over 8: the last position is padding.
        assert_eq!(conv(3, 2, 1, 1).slide(8).dropped, 0);
        assert_eq!(conv(3, 2, 0, 1).slide(32).dropped, 1);
        // Kernel 2, stride 3 over 8: windows at 0-1 and 3-4, 6-7; rows 2 and 5 are skipped.
        let slide = pool(2, 3, 0, false).slide(8);
        assert_eq!((slide.output, slide.skipped, slide.dropped), (3, 2, 0));
        // Kernel 1, stride 4 over 10: windows at 0, 4, 8; 3 + 3 skipped, row 9 dropped.
        let slide = conv(1, 4, 0, 1).slide(10);
        assert_eq!((slide.output, slide.skipped, slide.dropped), (3, 6, 1));
    }

    #[test]
    fn pool_tiling() {
        assert!(pool_tiles([28, 28], [2, 2], [2, 2], [0, 0]));
        assert!(!pool_tiles([27, 28], [2, 2], [2, 2], [0, 0]));
        assert!(!pool_tiles([28, 28], [2, 2], [1, 1], [0, 0]));
        assert!(!pool_tiles([28, 28], [2, 2], [2, 2], [1, 0]));
    }

    #[test]
    fn bilinear_sources_follow_pytorch() {
        // F.interpolate(torch.arange(4.).view(1, 1, 1, 4), size=(1, 7), mode='bilinear')
        // == [0, 0.3571, 0.9286, 1.5, 2.0714, 2.6429, 3] (PyTorch 2.15): the source of dst is
        // the weighted sum of the two indices.
        let want = [
            0.0, 0.3571429, 0.9285715, 1.5000001, 2.0714288, 2.6428573, 3.0,
        ];
        for (dst, want) in want.into_iter().enumerate() {
            let (i0, i1, w0, w1) = linear_source(dst, 4, 7, None, false);
            let got = w0 * i0 as f32 + w1 * i1 as f32;
            assert!((got - want).abs() < 1e-6, "{dst}: {got} vs {want}");
        }
        // align_corners=True: 0, 0.5, 1, ..., 3 exactly.
        for dst in 0..7 {
            let (i0, i1, w0, w1) = linear_source(dst, 4, 7, None, true);
            assert_eq!(w0 * i0 as f32 + w1 * i1 as f32, dst as f32 * 0.5);
        }
        // Past the last pixel's centre, it interpolates with itself (PyTorch keeps the weight).
        let (i0, i1, w0, w1) = linear_source(6, 4, 7, None, false);
        assert_eq!((i0, i1, w0 + w1), (3, 3, 1.0));
        assert_eq!(linear_source(0, 1, 3, None, true), (0, 0, 1.0, 0.0));
        // Nearest by size: 5 -> 3 reads 0, 1, 3 (floor(dst * 5 / 3)).
        let picked: Vec<_> = (0..3)
            .map(|d| nearest_sized_source(d, 5, 3, None))
            .collect();
        assert_eq!(picked, [0, 1, 3]);
        assert_eq!(nearest_source(5, 3, 2), 2);
    }

    #[test]
    fn adaptive_windows_cover_the_input_like_pytorch() {
        // 5 -> 3: [0, 2), [1, 4), [3, 5), as torch.nn.AdaptiveAvgPool1d(3) takes them.
        let windows: Vec<_> = (0..3).map(|i| adaptive_window(i, 5, 3)).collect();
        assert_eq!(windows, [(0, 2), (1, 4), (3, 5)]);
        // Growing 2 -> 5: every window keeps at least one element.
        for i in 0..5 {
            let (start, end) = adaptive_window(i, 2, 5);
            assert!(start < end && end <= 2, "{i}: {start}..{end}");
        }
        assert_eq!(adaptive_window(0, 7, 1), (0, 7));
    }

    #[test]
    fn nearest_sources_repeat_each_input_pixel() {
        for s in 1..12 {
            for dst in 0..5 * s {
                assert_eq!(
                    nearest_source(dst, 5, s),
                    dst / s,
                    "factor {s}, index {dst}"
                );
            }
        }
    }
}

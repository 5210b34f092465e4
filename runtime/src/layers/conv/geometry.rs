//! Every size of one convolution, resolved once: the output size (PyTorch's formula), the
//! padded buffers' layouts, the reduction lengths and the runs a receptive field spans.

use std::ops::Range;

use cnnc_core::geometry::Pad;

use crate::config::Conv2dConfig;
use crate::error::{Error, Result};
use crate::kernels::gemm::{NARROW_NR, NR, Seg, panels};
use crate::layers::check_positive;

/// Every size of one convolution, resolved: input `[cin, ih, iw]`, output `[cout, oh, ow]`,
/// kernel `kh x kw`, stride `sh, sw`, padding `ph, pw` before the input (top, left) and
/// `ph_end, pw_end` after it (bottom, right; larger by one only for an uneven `padding: same`),
/// dilation `dh, dw`. Everything reads positions from the top-left corner, so only the padded
/// sizes see the padding after the input.
#[derive(Clone, Copy, Debug)]
pub(super) struct Geom {
    pub(super) cin: usize,
    pub(super) ih: usize,
    pub(super) iw: usize,
    pub(super) cout: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) sh: usize,
    pub(super) sw: usize,
    pub(super) ph: usize,
    pub(super) pw: usize,
    pub(super) ph_end: usize,
    pub(super) pw_end: usize,
    pub(super) dh: usize,
    pub(super) dw: usize,
}

impl Geom {
    /// The geometry of convolution `c` over inputs of spatial size `input_hw`, checked: every
    /// size positive and the kernel within the padded input.
    pub(super) fn new(name: &str, c: &Conv2dConfig, input_hw: [usize; 2]) -> Result<Geom> {
        check_positive(name, "kernel_size", c.kernel_size)?;
        check_positive(name, "stride", c.stride)?;
        check_positive(name, "dilation", c.dilation)?;
        if c.in_channels == 0 || c.out_channels == 0 {
            return Err(Error::config(
                name,
                "in_channels and out_channels must be positive",
            ));
        }
        let out = |axis: usize| {
            conv_out(
                input_hw[axis],
                c.kernel_size[axis],
                c.stride[axis],
                c.pad(axis),
                c.dilation[axis],
            )
        };
        let (Some(oh), Some(ow)) = (out(0), out(1)) else {
            return Err(Error::config(
                name,
                format!(
                    "kernel {:?} with dilation {:?} is larger than the padded input {:?} + {:?}",
                    c.kernel_size,
                    c.dilation,
                    input_hw,
                    c.padding_total()
                ),
            ));
        };
        // The padded copy is allocated for every batch: bounded as the checker bounds it.
        let [th, tw] = c.padding_total();
        let padded = [
            input_hw[0].saturating_add(th),
            input_hw[1].saturating_add(tw),
        ];
        let numel = (c.in_channels as u64)
            .saturating_mul(padded[0] as u64)
            .saturating_mul(padded[1] as u64);
        if numel > cnnc_core::MAX_ELEMENTS {
            return Err(Error::config(
                name,
                format!(
                    "the padded input {padded:?} of {} channels has {numel} elements, more than \
                     the limit of {}",
                    c.in_channels,
                    cnnc_core::MAX_ELEMENTS
                ),
            ));
        }
        Ok(Geom {
            cin: c.in_channels,
            ih: input_hw[0],
            iw: input_hw[1],
            cout: c.out_channels,
            oh,
            ow,
            kh: c.kernel_size[0],
            kw: c.kernel_size[1],
            sh: c.stride[0],
            sw: c.stride[1],
            ph: c.padding[0],
            pw: c.padding[1],
            ph_end: c.padding_end[0],
            pw_end: c.padding_end[1],
            dh: c.dilation[0],
            dw: c.dilation[1],
        })
    }

    /// The outputs along `axis` (0: rows, 1: columns) that read a real input pixel, not padding,
    /// through kernel tap `tap`: `0 <= o * stride - pad + tap * dilation < input`.
    pub(super) fn real_outputs(&self, tap: usize, axis: usize) -> Range<usize> {
        let [out, input, stride, pad, dilation] = if axis == 0 {
            [self.oh, self.ih, self.sh, self.ph, self.dh]
        } else {
            [self.ow, self.iw, self.sw, self.pw, self.dw]
        };
        let at = tap * dilation;
        let lo = pad.saturating_sub(at).div_ceil(stride);
        let hi = (input + pad).saturating_sub(at).div_ceil(stride).min(out);
        lo.min(hi)..hi
    }

    /// Reduction length of the forward pass: one `(ky, kx, ci)` tap each.
    pub(super) fn k(&self) -> usize {
        self.kh * self.kw * self.cin
    }

    /// `dy`'s channel stride inside the layer: `cout` rounded up to whole panels, so the weight
    /// gradient kernel can read full panel rows of it; [`NARROW_NR`] for a layer of at most
    /// that many channels, whose weight gradient takes the narrow tiles.
    pub(super) fn cs(&self) -> usize {
        if self.cout <= NARROW_NR {
            NARROW_NR
        } else {
            panels(self.cout) * NR
        }
    }

    /// Reduction length of the input-gradient pass: one `(ky, kx, co)` step each, `co < cout`.
    /// `dy`'s channels `cout..cs` (zeros, as are the weights that would multiply them) are not
    /// part of it: a 40-channel layer, whose `dy` pixels are 64 wide, reads 40 of them. Each
    /// dropped step would add `0 * 0` to a chain that starts at `+0`, which changes nothing
    /// (but the sign of a zero that underflowed below the smallest subnormal).
    pub(super) fn k_back(&self) -> usize {
        self.kh * self.kw * self.cout
    }

    /// Runs of an input-gradient receptive field in the padded `dy` (direct path, `width` pixels
    /// of `cs` channels a row): one per kernel row where the channels fill the panels, else one
    /// per tap over its `cout` real channels, in `(ky, kx, co)` order either way.
    pub(super) fn back_runs(&self, width: usize) -> Vec<Seg> {
        let cs = self.cs();
        if self.cout == cs {
            return self.runs(cs, width);
        }
        let (kw, dh, dw, cout) = (self.kw, self.dh, self.dw, self.cout);
        (0..self.kh)
            .flat_map(|ky| {
                (0..kw).map(move |kx| Seg {
                    offset: (ky * dh * width + kx * dw) * cs,
                    len: cout,
                })
            })
            .collect()
    }

    /// Padded input size `[height, width]`.
    pub(super) fn padded_in(&self) -> (usize, usize) {
        (
            self.ih + self.ph + self.ph_end,
            self.iw + self.pw + self.pw_end,
        )
    }

    /// Whether the layer has no padding: its padded input is the input itself, which the weight
    /// gradient then reads in place.
    pub(super) fn unpadded(&self) -> bool {
        self.padded_in() == (self.ih, self.iw)
    }

    /// Whether the input gradient reads `dy` without a border ([`Geom::padded_dy`] is `dy`'s
    /// own layout): a 1 x 1 kernel without padding, at any stride.
    pub(super) fn borderless_dy(&self) -> bool {
        self.padded_dy() == (self.oh, self.ow, 0, 0)
    }

    /// The border `[top, left, bottom, right]` of the padded `dy` that turns the input gradient
    /// into a stride-1 convolution with the flipped kernel, when the layer allows it: each side
    /// `dilation * (kernel - 1)` less the padding on the opposite side of the input.
    fn border(&self) -> Option<[usize; 4]> {
        let [span_h, span_w] = [(self.kh - 1) * self.dh, (self.kw - 1) * self.dw];
        let border = [
            span_h.checked_sub(self.ph)?,
            span_w.checked_sub(self.pw)?,
            span_h.checked_sub(self.ph_end)?,
            span_w.checked_sub(self.pw_end)?,
        ];
        (self.sh == 1 && self.sw == 1).then_some(border)
    }

    /// The border `[top, left]` of the padded `dy` that turns the input gradient into a stride-1
    /// convolution with the flipped kernel, when the layer allows it.
    pub(super) fn direct_back(&self) -> Option<(usize, usize)> {
        self.border().map(|[top, left, _, _]| (top, left))
    }

    /// Padded `dy` size `[height, width]` and border `[top, left]`: `ih + (kh - 1) dh` rows
    /// and `iw + (kw - 1) dw` columns when the input gradient is direct; otherwise the border
    /// that every phase's taps read within ([`Geom::phases`]).
    pub(super) fn padded_dy(&self) -> (usize, usize, usize, usize) {
        let [top, left, bottom, right] = self.border().unwrap_or_else(|| {
            let (rows, cols) = self.phases();
            let ((top, bottom), (left, right)) =
                (phase_border(&rows, self.oh), phase_border(&cols, self.ow));
            [top, left, bottom, right]
        });
        (self.oh + top + bottom, self.ow + left + right, top, left)
    }

    /// The phases of the input gradient when it is not direct (strided layers): along the rows
    /// and along the columns (see [`axis_phases`]). The input pixels of one row phase and one
    /// column phase are read by the same taps, so their gradient is a stride-1 convolution of
    /// `dy` with those taps.
    pub(super) fn phases(&self) -> (Vec<AxisPhase>, Vec<AxisPhase>) {
        (
            axis_phases(self.ih, self.kh, self.sh, self.ph, self.dh),
            axis_phases(self.iw, self.kw, self.sw, self.pw, self.dw),
        )
    }

    /// Runs over a pixel's window in a buffer of `channels`-wide pixels, `width` pixels a row: one
    /// per kernel row when the kernel's columns are adjacent pixels, else one per tap.
    pub(super) fn runs(&self, channels: usize, width: usize) -> Vec<Seg> {
        let mut runs = Vec::new();
        for ky in 0..self.kh {
            let row = ky * self.dh * width * channels;
            if self.dw == 1 {
                runs.push(Seg {
                    offset: row,
                    len: self.kw * channels,
                });
            } else {
                runs.extend((0..self.kw).map(|kx| Seg {
                    offset: row + kx * self.dw * channels,
                    len: channels,
                }));
            }
        }
        runs
    }

    /// The layout of a staged `dy` ([`Geom::stage_dy`]): `[height, width, top, left]`, with the
    /// border of [`Geom::padded_dy`] or without one.
    pub(super) fn staged_dy(&self, border: bool) -> (usize, usize, usize, usize) {
        if border {
            self.padded_dy()
        } else {
            (self.oh, self.ow, 0, 0)
        }
    }
}

/// The taps of one phase of the input gradient along one axis: the input coordinates
/// `phase + stride * u` (`u < count`) and, for each kernel tap `k` that reads them (in the
/// flipped kernel's order, `k` descending), the `e` with which output `u + e` reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AxisPhase {
    pub(super) phase: usize,
    pub(super) count: usize,
    /// `(k, e)`, `k` descending.
    pub(super) taps: Vec<(usize, isize)>,
}

/// The phases of an axis of `input` coordinates read by a kernel of `kernel` taps at `stride`,
/// `pad` and `dilation`: input coordinate `i` is read by tap `k` of output `o` when
/// `o * stride = i + pad - k * dilation` (PyTorch's convolution, whose gradient this inverts).
pub(super) fn axis_phases(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Vec<AxisPhase> {
    (0..stride.min(input))
        .map(|phase| {
            let taps = (0..kernel)
                .rev()
                .filter_map(|k| {
                    let t = (phase + pad) as isize - (k * dilation) as isize;
                    let s = stride as isize;
                    (t.rem_euclid(s) == 0).then_some((k, t.div_euclid(s)))
                })
                .collect();
            AxisPhase {
                phase,
                count: (input - phase).div_ceil(stride),
                taps,
            }
        })
        .collect()
}

/// The border `(before, after)` of `dy` along an axis of `out` outputs that every phase's taps
/// read within.
fn phase_border(phases: &[AxisPhase], out: usize) -> (usize, usize) {
    let (mut before, mut after) = (0, 0);
    for p in phases {
        for &(_, e) in &p.taps {
            before = before.max(-e);
            after = after.max(p.count as isize - 1 + e - (out as isize - 1));
        }
    }
    (before as usize, after as usize)
}

/// Output length of a convolution along one axis, as PyTorch computes it.
pub(crate) fn conv_out(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: Pad,
    dilation: usize,
) -> Option<usize> {
    cnnc_core::geometry::conv_output(input, kernel, stride, pad, dilation)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every phase holds exactly the taps that read its coordinates, each with the output that
    /// reads them (`o * stride = i + pad - k * dilation`, `0 <= o < out`, or the border), and
    /// the border covers every such output.
    #[test]
    fn phases_hold_exactly_the_taps_that_read_each_coordinate() {
        for input in 1..12 {
            for kernel in 1..6 {
                for stride in 1..5 {
                    for pad in 0..4 {
                        for dilation in 1..4 {
                            let span = (kernel - 1) * dilation;
                            if input + 2 * pad <= span {
                                continue;
                            }
                            let out = (input + 2 * pad - span - 1) / stride + 1;
                            let phases = axis_phases(input, kernel, stride, pad, dilation);
                            let (before, after) = phase_border(&phases, out);
                            let case = (input, kernel, stride, pad, dilation);
                            let covered: usize = phases.iter().map(|p| p.count).sum();
                            assert_eq!(covered, input, "{case:?}");
                            for p in &phases {
                                for u in 0..p.count {
                                    let i = p.phase + stride * u;
                                    // The definition: taps in descending order and the output
                                    // each reads from, in range or not.
                                    let want: Vec<(usize, isize)> = (0..kernel)
                                        .rev()
                                        .filter_map(|k| {
                                            let t = (i + pad) as isize - (k * dilation) as isize;
                                            (t.rem_euclid(stride as isize) == 0)
                                                .then_some((k, t.div_euclid(stride as isize)))
                                        })
                                        .collect();
                                    let got: Vec<(usize, isize)> =
                                        p.taps.iter().map(|&(k, e)| (k, u as isize + e)).collect();
                                    assert_eq!(got, want, "{case:?}, i {i}");
                                    for (_, o) in got {
                                        assert!(o >= -(before as isize), "{case:?}");
                                        assert!(o < (out + after) as isize, "{case:?}");
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

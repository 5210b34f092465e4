//! The weights copied into the panels the kernels read: forward panels of output channels, and
//! the flipped kernel as input-gradient panels of input channels.

use std::ops::Range;

use rayon::prelude::*;

use super::Conv2d;
use super::geometry::Geom;
use super::winograd;
use crate::error::Result;
use crate::kernels::gemm::{NR, Seg, panels};
use crate::layers::check_param;

impl Conv2d {
    /// Checks the parameters' shapes, forgets the forward panels when they may be out of date
    /// (the next `&self` forward packs them again; a training forward packs the kernel rows it
    /// reads into the training workspace instead, so training does not hold a copy of every
    /// weight through the step) and copies the bias into its row.
    pub(super) fn pack(&mut self) -> Result<()> {
        self.check_params()?;
        if self.stale.take(false) {
            self.packed.take();
        }
        let mut bias_row = std::mem::take(&mut self.bias_row);
        self.bias_into(&mut bias_row);
        self.bias_row = bias_row;
        Ok(())
    }

    /// Values in the forward panels: `cout` in whole panels, times the reduction length.
    pub(super) fn packed_len(&self) -> usize {
        match self.winograd() {
            Some(tiling) => winograd::panels_len(&self.g, tiling),
            None => panels(self.g.cout) * self.forward_steps() * NR,
        }
    }

    /// The forward panels for `&self` inference, packed by the first call after the weights
    /// changed ([`Conv2d::pack`] forgets them).
    pub(super) fn packed_panels(&self) -> &[f32] {
        self.packed.get_or_init(|| {
            let mut packed = vec![0.0; self.packed_len()];
            self.pack_forward(&mut packed);
            packed
        })
    }

    /// Fills `packed` ([`Conv2d::packed_len`] values) with the forward panels the layer's path
    /// reads: Winograd's transformed weights ([`winograd::pack`]), or the kernel rows that read
    /// real input ([`Conv2d::pack_read`]; the others keep what `packed` held).
    pub(super) fn pack_forward(&self, packed: &mut [f32]) {
        let Some(tiling) = self.winograd() else {
            self.pack_read(false, packed);
            return;
        };
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        winograd::pack(&self.g, w, packed, tiling);
    }

    /// Checks that the weight and bias still have the layer's shapes.
    pub(super) fn check_params(&self) -> Result<()> {
        let g = self.g;
        check_param(
            &self.name,
            "weight",
            &self.weight,
            &[g.cout, g.cin, g.kh, g.kw],
        )?;
        if let Some(b) = &self.bias {
            check_param(&self.name, "bias", b, &[g.cout])?;
        }
        Ok(())
    }

    /// Copies the weight into the forward panels (`back`: the input-gradient panels) in
    /// `packed`, as long as the layer's own: every kernel row (the passes pack only those they
    /// read, [`Conv2d::pack_read`]; the tests check that against this).
    #[cfg(test)]
    pub(super) fn pack_into(&self, back: bool, packed: &mut [f32]) {
        self.pack_rows(back, packed, |_| true);
    }

    /// [`Conv2d::pack_into`] of only the kernel rows that read real input ([`live_row`]):
    /// those the forward pass and the direct input gradient read. The panel rows of the others
    /// keep whatever `packed` held. ResNet-18's layer4 (1 x 1 images) packs a third of each
    /// 3 x 3 kernel.
    pub(super) fn pack_read(&self, back: bool, packed: &mut [f32]) {
        self.pack_rows(back, packed, |ky| live_row(&self.g, ky));
    }

    /// [`Conv2d::pack_into`] of the kernel rows `ky` (unflipped) for which `keep(ky)` holds.
    fn pack_rows(&self, back: bool, packed: &mut [f32], keep: impl Fn(usize) -> bool + Sync) {
        let g = self.g;
        let taps = g.kh * g.kw;
        // The logical OIHW order as one slice (borrowed unless the layout differs).
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        let cols = live_cols(&g);
        let (first, width) = (cols.start, cols.len());
        let slots = g.kh * width;
        // The threads take whole panels (a copy: the values do not depend on the split).
        if back {
            // Panel `j` of input channels; row `slot * cout + co`, the slots over the flipped
            // kernel's rows and its columns that read pixels (the flipped `cols`): slot `s`
            // holds kernel position `taps - 1 - flipped(s)` of weight `(co, j * NR + l)`.
            let flipped = |slot: usize| (slot / width) * g.kw + g.kw - first - width + slot % width;
            let live: Vec<(usize, usize)> = (0..slots)
                .filter(|&slot| keep(g.kh - 1 - slot / width))
                .map(|slot| (slot * g.cout * NR, taps - 1 - flipped(slot)))
                .collect();
            packed
                .par_chunks_exact_mut(self.back_steps() * NR)
                .enumerate()
                .for_each(|(j, panel)| {
                    fill_panel(panel, g.cout, &live, w, Source::input_lanes(&g, j));
                });
        } else {
            // Panel `j` of output channels; row `slot * cin + ci`, the slots over the kernel's
            // rows and its columns `cols`: slot `s` holds kernel position `tap(s)` of weight
            // `(j * NR + l, ci)`.
            let tap = |slot: usize| (slot / width) * g.kw + first + slot % width;
            let live: Vec<(usize, usize)> = (0..slots)
                .filter(|&slot| keep(slot / width))
                .map(|slot| (slot * g.cin * NR, tap(slot)))
                .collect();
            packed
                .par_chunks_exact_mut(self.forward_steps() * NR)
                .enumerate()
                .for_each(|(j, panel)| {
                    fill_panel(panel, g.cin, &live, w, Source::output_lanes(&g, j));
                });
        }
    }

    /// Reduction steps of the forward pass: `(ky, kx, ci)` over the kernel columns that read
    /// pixels ([`live_cols`]); `g.k()` unless the images are narrower than the kernel reaches.
    pub(super) fn forward_steps(&self) -> usize {
        self.g.k() / self.g.kw * live_cols(&self.g).len()
    }

    /// Reduction steps of the direct input gradient: `(ky, kx, co)` of the flipped kernel over
    /// its columns that read pixels; `g.k_back()` unless the images are that narrow.
    pub(super) fn back_steps(&self) -> usize {
        self.g.k_back() / self.g.kw * live_cols(&self.g).len()
    }

    /// Copies the bias into `row` (zeros without one).
    pub(super) fn bias_into(&self, row: &mut [f32]) {
        match &self.bias {
            Some(b) => {
                for (dst, &v) in row.iter_mut().zip(b.value.iter()) {
                    *dst = v;
                }
            }
            None => row.fill(0.0),
        }
    }
}

/// Whether kernel row `ky` of `g` reads a real input row for some output row. A row that does
/// not multiplies only padding: no pass reads its panel rows (forward and the direct input
/// gradient skip it, see [`KernelRows::hull`](super::plan::KernelRows::hull)), and its weight
/// gradient is zero.
pub(super) fn live_row(g: &Geom, ky: usize) -> bool {
    !g.real_outputs(ky, 0).is_empty()
}

/// Whether kernel position `tap` (`ky * kw + kx`) of `g` reads a real input pixel for some
/// output pixel. The weight gradient of one that does not is exactly zero (every product reads
/// padding), so it is written as such and never computed: 8 of the 9 positions of a 3 x 3
/// convolution over 1 x 1 images (ResNet-18's layer4).
pub(super) fn live_tap(g: &Geom, tap: usize) -> bool {
    live_row(g, tap / g.kw) && !g.real_outputs(tap % g.kw, 1).is_empty()
}

/// The kernel columns `kx` that read a real input column for some output column (the hull of
/// them; every column when none does). The others multiply only padding: the forward pass and
/// the direct input gradient leave them out of their runs and panels, so a 3 x 3 convolution
/// over 1 x 1 images (ResNet-18's layer4) reduces over its middle column only. For the flipped
/// kernel of the input gradient they are the columns `kw - end..kw - start`.
pub(super) fn live_cols(g: &Geom) -> Range<usize> {
    let live = |kx: &usize| !g.real_outputs(*kx, 1).is_empty();
    match ((0..g.kw).find(live), (0..g.kw).rev().find(live)) {
        (Some(first), Some(last)) => first..last + 1,
        _ => 0..g.kw,
    }
}

/// `runs` (over a window of `kh` rows of `kw` columns: one run per kernel row of `kw` columns,
/// or one per tap, in order) restricted to the columns `cols`.
pub(super) fn runs_in(runs: Vec<Seg>, kh: usize, kw: usize, cols: Range<usize>) -> Vec<Seg> {
    if cols == (0..kw) {
        return runs;
    }
    if runs.len() == kh {
        runs.into_iter()
            .map(|run| {
                let column = run.len / kw;
                Seg {
                    offset: run.offset + cols.start * column,
                    len: cols.len() * column,
                }
            })
            .collect()
    } else {
        (runs.into_iter().enumerate())
            .filter(|(i, _)| cols.contains(&(i % kw)))
            .map(|(_, run)| run)
            .collect()
    }
}

/// Where [`fill_panel`] reads the kernel positions of lane `l` of a panel's rows for channel
/// `c`: the OIHW weight from `base + c * per_row + l * per_lane`, for the first `lanes` lanes
/// (the others, past the weight's channels, are zeros).
pub(super) struct Source {
    base: usize,
    per_row: usize,
    per_lane: usize,
    lanes: usize,
}

impl Source {
    /// Panel `j` of the forward: output channels `j * NR..` in the lanes, a row per input
    /// channel.
    fn output_lanes(g: &Geom, j: usize) -> Self {
        let taps = g.kh * g.kw;
        Source {
            base: j * NR * g.cin * taps,
            per_row: taps,
            per_lane: g.cin * taps,
            lanes: NR.min(g.cout - j * NR),
        }
    }

    /// Panel `j` of an input gradient: input channels `j * NR..` in the lanes, a row per
    /// output channel (the transposed kernel).
    pub(super) fn input_lanes(g: &Geom, j: usize) -> Self {
        let taps = g.kh * g.kw;
        Source {
            base: j * NR * taps,
            per_row: g.cin * taps,
            per_lane: taps,
            lanes: NR.min(g.cin - j * NR),
        }
    }
}

/// Fills `panel`, whose rows for channel `c` start at `offset + c * NR` for each `(offset, tap)`
/// of `live` and hold in lane `l` kernel position `tap` of the weight `w` that `source` says.
/// A weight's kernel positions lie together, so each lane reads one short run of `w` and
/// writes its value into each of the few rows it fills. Kernel position by kernel position and
/// lane by lane, every value was a gather a kernel apart (3 ns a value: a tenth of a ResNet-18
/// training step went to packing).
pub(super) fn fill_panel(
    panel: &mut [f32],
    channels: usize,
    live: &[(usize, usize)],
    w: &[f32],
    source: Source,
) {
    for c in 0..channels {
        let dst = &mut panel[c * NR..];
        let row = source.base + c * source.per_row;
        if source.per_lane == 1 {
            // The lanes' weights adjacent in `w` (a 1 x 1 kernel's input-gradient panels): one
            // copy a row.
            for &(offset, tap) in live {
                let lanes = &w[row + tap..][..source.lanes];
                dst[offset..offset + source.lanes].copy_from_slice(lanes);
            }
        } else {
            for l in 0..source.lanes {
                let kernel = &w[row + l * source.per_lane..];
                for &(offset, tap) in live {
                    dst[offset + l] = kernel[tap];
                }
            }
        }
        for l in source.lanes..NR {
            for &(offset, _) in live {
                dst[offset + l] = 0.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Conv2dConfig;
    use crate::init::init_rng;

    fn conv(cin: usize, cout: usize, kernel: [usize; 2]) -> Conv2d {
        conv_over(cin, cout, kernel, [5, 6])
    }

    fn conv_over(cin: usize, cout: usize, kernel: [usize; 2], input: [usize; 2]) -> Conv2d {
        let config = Conv2dConfig {
            padding: [1, 1],
            padding_end: [1, 1],
            bias: false,
            ..Conv2dConfig::new(cin, cout, kernel)
        };
        Conv2d::new("conv", &config, input, &mut init_rng(3)).expect("a valid convolution")
    }

    /// The blocked copies lay the weights out exactly as the panels' definitions say, for
    /// channel counts on and off the block and panel sizes and kernels of every shape.
    #[test]
    fn panels_hold_each_weight_where_the_kernels_read_it() {
        for (cin, cout, kernel) in [
            (3, 5, [3, 3]),
            (17, 40, [2, 3]),
            (64, 33, [1, 1]),
            (9, 8, [3, 1]),
        ] {
            let layer = conv(cin, cout, kernel);
            let w = layer.weight.value.as_slice().expect("contiguous");
            let taps = kernel[0] * kernel[1];
            let at = |co: usize, ci: usize, tap: usize| w[(co * cin + ci) * taps + tap];
            let mut forward = vec![f32::NAN; panels(cout) * taps * cin * NR];
            layer.pack_into(false, &mut forward);
            for (i, &v) in forward.iter().enumerate() {
                let (j, r, l) = (i / (taps * cin * NR), i / NR % (taps * cin), i % NR);
                let co = j * NR + l;
                let want = if co < cout {
                    at(co, r % cin, r / cin)
                } else {
                    0.0
                };
                assert_eq!(
                    v.to_bits(),
                    want.to_bits(),
                    "forward {cin}->{cout} {kernel:?} at {i}"
                );
            }
            let mut back = vec![f32::NAN; panels(cin) * taps * cout * NR];
            layer.pack_into(true, &mut back);
            for (i, &v) in back.iter().enumerate() {
                let (j, r, l) = (i / (taps * cout * NR), i / NR % (taps * cout), i % NR);
                let ci = j * NR + l;
                let flipped = taps - 1 - r / cout;
                let want = if ci < cin {
                    at(r % cout, ci, flipped)
                } else {
                    0.0
                };
                assert_eq!(
                    v.to_bits(),
                    want.to_bits(),
                    "back {cin}->{cout} {kernel:?} at {i}"
                );
            }
        }
    }

    /// Over one-row images (padding 1), a 3 x 3 kernel's first and last rows read only padding:
    /// `pack_read` fills the middle row's panel rows as `pack_into` does and leaves the others
    /// as they were, in both layouts.
    #[test]
    fn pack_read_fills_exactly_the_rows_that_read_pixels() {
        let (cin, cout) = (19, 40);
        let layer = conv_over(cin, cout, [3, 3], [1, 7]);
        assert!(!live_row(&layer.g, 0) && live_row(&layer.g, 1) && !live_row(&layer.g, 2));
        for (back, width, steps) in [(false, cout, 9 * cin), (true, cin, 9 * cout)] {
            let len = panels(width) * steps * NR;
            let mut full = vec![f32::NAN; len];
            layer.pack_into(back, &mut full);
            let mut read = vec![f32::NAN; len];
            layer.pack_read(back, &mut read);
            let per_row = steps / 3;
            for (i, (&got, &want)) in read.iter().zip(&full).enumerate() {
                // The (flipped, for `back`) kernel row of this panel row: the middle one either way.
                let row = i / NR % steps / per_row;
                if row == 1 {
                    assert_eq!(got.to_bits(), want.to_bits(), "back {back}, at {i}");
                } else {
                    assert!(
                        got.is_nan(),
                        "back {back}, at {i}: a row of padding was packed"
                    );
                }
            }
        }
    }
}

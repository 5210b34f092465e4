//! The weights copied into the panels the kernels read: forward panels of output channels, and
//! the flipped kernel as input-gradient panels of input channels.

use rayon::prelude::*;

use super::Conv2d;
use crate::error::Result;
use crate::kernels::gemm::NR;
use crate::layers::check_param;

impl Conv2d {
    /// Checks the parameters' shapes and copies them into the forward panels, when they may be
    /// out of date.
    pub(super) fn pack(&mut self) -> Result<()> {
        self.check_params()?;
        if self.stale.take(false) {
            let mut packed = std::mem::take(&mut self.packed);
            self.pack_into(false, &mut packed);
            self.packed = packed;
        }
        let mut bias_row = std::mem::take(&mut self.bias_row);
        self.bias_into(&mut bias_row);
        self.bias_row = bias_row;
        Ok(())
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
    /// `packed`, as long as the layer's own.
    pub(super) fn pack_into(&self, back: bool, packed: &mut [f32]) {
        let g = self.g;
        let taps = g.kh * g.kw;
        // The logical OIHW order as one slice (borrowed unless the layout differs).
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        let at = |co: usize, ci: usize, tap: usize| w[(co * g.cin + ci) * taps + tap];
        // The threads take whole panels (a copy: the values do not depend on the split).
        if back {
            // Panel `j` of input channels; row `tap * cout + co`, `tap` over the flipped kernel.
            packed
                .par_chunks_exact_mut(g.k_back() * NR)
                .enumerate()
                .for_each(|(j, panel)| {
                    fill_panel(panel, taps, g.cout, |tap, co, l| {
                        let ci = j * NR + l;
                        if ci < g.cin {
                            at(co, ci, taps - 1 - tap)
                        } else {
                            0.0
                        }
                    });
                });
        } else {
            // Panel `j` of output channels; row `(ky * kw + kx) * cin + ci`.
            packed
                .par_chunks_exact_mut(g.k() * NR)
                .enumerate()
                .for_each(|(j, panel)| {
                    fill_panel(panel, taps, g.cin, |tap, ci, l| {
                        let co = j * NR + l;
                        if co < g.cout { at(co, ci, tap) } else { 0.0 }
                    });
                });
        }
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

/// Channels of a panel's rows [`fill_panel`] copies for every kernel position before it moves
/// on: the weights they read (this many channels of each of the panel's `NR` weight rows) stay
/// in L1 across the kernel positions.
const PACK_BLOCK: usize = 8;

/// Fills `panel`, whose row `tap * channels + c` holds `value(tap, c, l)` in lane `l`, a block
/// of [`PACK_BLOCK`] channels at a time. Row by row, each kernel position re-read the whole
/// panel's weights from L2 (or memory): repacking after every optimizer step cost ~15% of a
/// ResNet-18 training step.
fn fill_panel(
    panel: &mut [f32],
    taps: usize,
    channels: usize,
    value: impl Fn(usize, usize, usize) -> f32,
) {
    for c0 in (0..channels).step_by(PACK_BLOCK) {
        for tap in 0..taps {
            for c in c0..(c0 + PACK_BLOCK).min(channels) {
                let row = &mut panel[(tap * channels + c) * NR..][..NR];
                for (l, dst) in row.iter_mut().enumerate() {
                    *dst = value(tap, c, l);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Conv2dConfig;
    use crate::init::init_rng;
    use crate::kernels::gemm::panels;

    fn conv(cin: usize, cout: usize, kernel: [usize; 2]) -> Conv2d {
        let config = Conv2dConfig {
            in_channels: cin,
            out_channels: cout,
            kernel_size: kernel,
            stride: [1, 1],
            padding: [1, 1],
            padding_end: [1, 1],
            dilation: [1, 1],
            groups: 1,
            bias: false,
            padding_mode: Default::default(),
        };
        Conv2d::new("conv", &config, [5, 6], &mut init_rng(3)).expect("a valid convolution")
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
}

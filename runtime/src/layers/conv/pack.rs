//! The weights copied into the panels the kernels read: forward panels of output channels, and
//! the flipped kernel as input-gradient panels of input channels.

use super::Conv2d;
use crate::error::Result;
use crate::kernels::gemm::NR;
use crate::layers::check_param;

impl Conv2d {
    /// Checks the parameters' shapes and copies them into the forward panels (`back`: the
    /// input-gradient panels instead), when they may be out of date.
    pub(super) fn pack(&mut self, back: bool) -> Result<()> {
        self.check_params()?;
        if self.stale.take(back) {
            let field = if back {
                &mut self.packed_back
            } else {
                &mut self.packed
            };
            let mut packed = std::mem::take(field);
            self.pack_into(back, &mut packed);
            *(if back {
                &mut self.packed_back
            } else {
                &mut self.packed
            }) = packed;
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
        let (k, kb) = (g.k(), g.k_back());
        // The logical OIHW order as one slice (borrowed unless the layout differs).
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        let at = |co: usize, ci: usize, ky: usize, kx: usize| {
            w[((co * g.cin + ci) * g.kh + ky) * g.kw + kx]
        };
        // Written in the panels' order, reading the weights (in cache) out of order:
        // scattered writes to the panels cost ~0.3 ms a step for the seed model.
        if back {
            // Panel `j` of input channels; row `tap * cout + co`, `tap` over the flipped kernel.
            for (j, panel) in packed.chunks_exact_mut(kb * NR).enumerate() {
                for (r, row) in panel.chunks_exact_mut(NR).enumerate() {
                    let (tap, co) = (r / g.cout, r % g.cout);
                    let (ky, kx) = (g.kh - 1 - tap / g.kw, g.kw - 1 - tap % g.kw);
                    for (l, dst) in row.iter_mut().enumerate() {
                        let ci = j * NR + l;
                        *dst = if ci < g.cin && co < g.cout {
                            at(co, ci, ky, kx)
                        } else {
                            0.0
                        };
                    }
                }
            }
        } else {
            // Panel `j` of output channels; row `(ky * kw + kx) * cin + ci`.
            for (j, panel) in packed.chunks_exact_mut(k * NR).enumerate() {
                for (r, row) in panel.chunks_exact_mut(NR).enumerate() {
                    let (tap, ci) = (r / g.cin, r % g.cin);
                    let (ky, kx) = (tap / g.kw, tap % g.kw);
                    for (l, dst) in row.iter_mut().enumerate() {
                        let co = j * NR + l;
                        *dst = if co < g.cout { at(co, ci, ky, kx) } else { 0.0 };
                    }
                }
            }
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

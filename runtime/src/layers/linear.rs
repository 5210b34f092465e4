//! `torch.nn.Linear` on `[batch, features]` rows with the runtime's micro-kernels: the weight is
//! copied into panels for the forward and input-gradient products, and the weight gradient sums
//! outer products over the batch, one output tile per parallel task.

use cnnc_core::{Reads, Shape};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{
    Layer, Stale, assign, check_backward, check_forward, check_param, visit_weight_bias,
    visit_weight_bias_ref, zero_param,
};
use crate::config::LinearConfig;
use crate::error::{Error, Result};
use crate::init::{fan_in_bound, fill_uniform};
use crate::kernels::gemm::{
    Grid, MR, NR, RunTable, Seg, Start, Tile, panels, rows_panel, sum_outer,
};
use crate::param::{Entry, EntryRef, Param};
use crate::scratch;
use crate::tensor::Mode;

/// `torch.nn.Linear(in_features, out_features, bias=...)`: `[N, in_features]` to
/// `[N, out_features]`, `y = x W^T + b`.
#[derive(Clone, Debug)]
pub struct Linear {
    name: String,
    weight_name: String,
    bias_name: String,
    config: LinearConfig,
    /// `[out_features, in_features]`.
    weight: Param,
    /// `[out_features]`, when the layer has a bias.
    bias: Option<Param>,
    /// `W^T` as forward panels: `[out / NR][in][NR]`, zero-padded.
    packed: Vec<f32>,
    /// `W` as input-gradient panels: `[in / NR][out][NR]`, zero-padded.
    packed_back: Vec<f32>,
    /// One run over a whole input row, and one over a whole `dy` row (see [`rows_times_panels`]).
    rows: [RunTable; 2],
    /// The bias, zero-padded to whole panels (zeros without one).
    bias_row: Vec<f32>,
    /// Whether `packed` and `packed_back` may be out of date.
    stale: Stale,
    /// `dy`, plus `MR` floats the weight-gradient kernel may read past its end.
    dy_copy: Vec<f32>,
    /// `x` with rows widened to whole panels (zeros), for the weight-gradient kernel.
    x_copy: Vec<f32>,
    /// The weight gradient `[out][in]` before it is copied into `weight.grad`.
    wgrad: Vec<f32>,
}

impl Linear {
    /// Builds the layer, initialised as PyTorch does: weight and bias from
    /// `U(-1/sqrt(in_features), 1/sqrt(in_features))` drawn from `rng` (weight first). The input
    /// must be flat with `in_features` features.
    pub fn new(
        name: &str,
        config: &LinearConfig,
        input: Shape,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let (fin, fout) = (config.in_features, config.out_features);
        match input {
            Shape::Flat(features) if features == fin => {}
            Shape::Flat(features) => {
                return Err(Error::config(
                    name,
                    format!("linear expects {fin} input features, found {features}"),
                ));
            }
            Shape::Chw(_) => {
                return Err(Error::config(
                    name,
                    format!(
                        "linear needs a flat input, found an image {input}; add a flatten layer before it"
                    ),
                ));
            }
        }
        if fin == 0 || fout == 0 {
            return Err(Error::config(
                name,
                "in_features and out_features must be positive",
            ));
        }
        let bound = fan_in_bound(fin);
        let mut weight = zero_param(&[fout, fin]);
        fill_uniform(weight.value.iter_mut(), bound, rng);
        let bias = config.bias.then(|| {
            let mut b = zero_param(&[fout]);
            fill_uniform(b.value.iter_mut(), bound, rng);
            b
        });
        let mut layer = Linear {
            name: name.to_owned(),
            weight_name: format!("{name}.weight"),
            bias_name: format!("{name}.bias"),
            config: config.clone(),
            weight,
            bias,
            packed: vec![0.0; panels(fout) * NR * fin],
            packed_back: vec![0.0; panels(fin) * NR * fout],
            bias_row: vec![0.0; panels(fout) * NR],
            stale: Stale::default(),
            rows: [fin, fout].map(|len| RunTable::new(vec![Seg { offset: 0, len }])),
            dy_copy: Vec::new(),
            x_copy: Vec::new(),
            wgrad: vec![0.0; fout * fin],
        };
        // Packed now, so that `&self` inference on a new layer reads panels.
        layer.pack(false)?;
        Ok(layer)
    }

    weight_bias_accessors!();

    /// The layer's arguments.
    pub fn config(&self) -> &LinearConfig {
        &self.config
    }

    /// Checks the parameters' shapes and copies them into the forward panels (`back`: the
    /// input-gradient panels instead), when they may be out of date.
    fn pack(&mut self, back: bool) -> Result<()> {
        self.check_params()?;
        if self.stale.take(back) {
            let mut packed = std::mem::take(if back {
                &mut self.packed_back
            } else {
                &mut self.packed
            });
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
    fn check_params(&self) -> Result<()> {
        let (fin, fout) = (self.config.in_features, self.config.out_features);
        check_param(&self.name, "weight", &self.weight, &[fout, fin])?;
        if let Some(b) = &self.bias {
            check_param(&self.name, "bias", b, &[fout])?;
        }
        Ok(())
    }

    /// Copies the weight into forward panels (`back`: input-gradient panels) in `packed`.
    fn pack_into(&self, back: bool, packed: &mut [f32]) {
        let (fin, fout) = (self.config.in_features, self.config.out_features);
        // The logical `[out, in]` order as one slice (borrowed unless the layout differs).
        let weight = self.weight.value.as_standard_layout();
        let w = weight
            .as_slice()
            .expect("a standard-layout array is contiguous");
        // Written in the panels' order, reading the weights out of order (see `Conv2d`).
        let (width, rows) = if back { (fin, fout) } else { (fout, fin) };
        // Panel `j` of `width` (the output's columns), row `r` of `rows` (the reduction).
        for (j, panel) in packed.chunks_exact_mut(rows * NR).enumerate() {
            for (r, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (l, dst) in row.iter_mut().enumerate() {
                    let col = j * NR + l;
                    let (o, i) = if back { (r, col) } else { (col, r) };
                    *dst = if col < width { w[o * fin + i] } else { 0.0 };
                }
            }
        }
    }

    /// Copies the bias into `row` (zeros without one).
    fn bias_into(&self, row: &mut [f32]) {
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

/// `out[r][c] = start[c] + rows · panel` for `batch` rows of `a` (`width` values each, `run` one
/// run over them): one tile of `MR` rows per parallel task, every panel of the `out_width`
/// outputs. `start` holds whole panels, or nothing for zeros.
#[allow(clippy::too_many_arguments)]
fn rows_times_panels(
    a: &[f32],
    width: usize,
    run: &RunTable,
    batch: usize,
    packed: &[f32],
    start: &[f32],
    out: &mut [f32],
    out_width: usize,
) {
    out[..batch * out_width]
        .par_chunks_mut(MR * out_width)
        .enumerate()
        .for_each(|(t, out)| {
            let (first, rows) = (t * MR, out.len() / out_width);
            let rows_at: [usize; MR] = std::array::from_fn(|i| (first + i.min(rows - 1)) * width);
            for j in 0..panels(out_width) {
                let start = match start.get(j * NR..(j + 1) * NR) {
                    Some(row) => Start::Row(row.try_into().expect("NR values")),
                    None => Start::Zero,
                };
                let mut tile: Tile = [[0.0; NR]; MR];
                rows_panel(
                    &mut tile,
                    start,
                    a,
                    &rows_at,
                    run.all(),
                    &packed[j * width * NR..],
                );
                let cols = NR.min(out_width - j * NR);
                for (row, dst) in tile.iter().zip(out.chunks_mut(out_width)).take(rows) {
                    dst[j * NR..j * NR + cols].copy_from_slice(&row[..cols]);
                }
            }
        });
}

impl Layer for Linear {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        Shape::Flat(self.config.in_features)
    }

    fn output_shape(&self) -> Shape {
        Shape::Flat(self.config.out_features)
    }

    /// Each sample's row of the product is its own chain of multiply-adds.
    fn batch_grain(&self) -> Option<usize> {
        Some(1)
    }

    /// Reads the packed weights; when a change through `weight_mut` or `bias_mut` left them
    /// out of date, packs into scratch memory instead (see [`Layer::infer`]).
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (nx, _) = check_forward(self, x, y, batch)?;
        self.check_params()?;
        let (fin, fout) = (self.config.in_features, self.config.out_features);
        let run = &self.rows[0];
        if !self.stale.forward_stale() {
            let (packed, bias_row) = (&self.packed, &self.bias_row);
            rows_times_panels(&x[..nx], fin, run, batch, packed, bias_row, y, fout);
            return Ok(());
        }
        let mut packed = scratch::take(self.packed.len(), scratch::ANY, 0.0);
        let mut bias_row = scratch::take(self.bias_row.len(), scratch::ANY, 0.0);
        let (packed, bias_row) = (
            &mut packed[..self.packed.len()],
            &mut bias_row[..self.bias_row.len()],
        );
        self.pack_into(false, packed);
        self.bias_into(bias_row);
        rows_times_panels(&x[..nx], fin, run, batch, packed, bias_row, y, fout);
        Ok(())
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, _mode: Mode) -> Result<()> {
        self.pack(false)?;
        self.infer(x, y, batch)
    }

    /// The input only.
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: true,
            output: false,
        }
    }

    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (nx, ny) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        self.pack(true)?;
        let (fin, fout) = (self.config.in_features, self.config.out_features);
        let dy = &dy[..ny];
        let fin_pad = panels(fin) * NR;
        if self.dy_copy.len() < ny + MR {
            self.dy_copy.resize(ny + MR, 0.0);
        }
        if self.x_copy.len() < batch * fin_pad {
            self.x_copy.resize(batch * fin_pad, 0.0);
        }
        self.dy_copy[..ny].copy_from_slice(dy);
        for (dst, src) in self
            .x_copy
            .chunks_exact_mut(fin_pad)
            .zip(x[..nx].chunks_exact(fin))
        {
            dst[..fin].copy_from_slice(src);
        }
        // dW[o][i] = sum over the batch of dy[b][o] * x[b][i], one tile of outputs per task.
        let grid = Grid {
            images: 1,
            rows: 1,
            cols: batch,
            a_image: 0,
            a_row: 0,
            a_col: fout,
            b_image: 0,
            b_row: 0,
            b_col: fin_pad,
        };
        // A frozen weight keeps its gradient (zero): PyTorch computes none.
        if self.weight.requires_grad {
            let (dy_copy, x_copy) = (&self.dy_copy[..], &self.x_copy[..]);
            self.wgrad
                .par_chunks_mut(MR * fin)
                .enumerate()
                .for_each(|(t, wgrad)| {
                    let rows = wgrad.len() / fin;
                    for j in 0..panels(fin) {
                        let mut tile = [[0.0; NR]; MR];
                        let a_rows = std::array::from_fn(|i| t * MR + i);
                        sum_outer(
                            &mut tile,
                            Start::Zero,
                            dy_copy,
                            &a_rows,
                            x_copy,
                            j * NR,
                            grid,
                        );
                        let cols = NR.min(fin - j * NR);
                        for (row, dst) in tile.iter().zip(wgrad.chunks_mut(fin)).take(rows) {
                            dst[j * NR..j * NR + cols].copy_from_slice(&row[..cols]);
                        }
                    }
                });
            assign(&mut self.weight.grad, self.wgrad.iter().copied());
        }
        if let Some(bias) = &mut self.bias
            && bias.requires_grad
        {
            let sums = (0..fout).map(|o| dy.chunks_exact(fout).fold(0.0, |s, row| s + row[o]));
            assign(&mut bias.grad, sums);
        }
        if let Some(dx) = dx {
            let (packed, run) = (&self.packed_back, &self.rows[1]);
            rows_times_panels(dy, fout, run, batch, packed, &[], dx, fin);
        }
        Ok(())
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        let names = [self.weight_name.as_str(), self.bias_name.as_str()];
        self.stale.mark();
        visit_weight_bias(f, names, &mut self.weight, self.bias.as_mut());
        // Repacked now, so `infer` reads fresh panels; a wrong shape is reported by the next
        // forward.
        let _ = self.pack(false);
    }

    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        let names = [self.weight_name.as_str(), self.bias_name.as_str()];
        visit_weight_bias_ref(f, names, &self.weight, self.bias.as_ref());
    }
}

//! 2-D convolution (`torch.nn.Conv2d`) as a direct convolution on pixel-major activations: the
//! input is copied once into a zero-padded buffer, and the micro-kernels read each output pixel's
//! receptive field from it in place (one contiguous run per kernel row), so no im2col matrix is
//! built. The input gradient is the same kind of convolution of the padded `dy` with the flipped
//! kernel (stride 1), or a gather of `dy` rows otherwise; the weight gradient sums outer products
//! over the pixels of each image.
//!
//! One concern per file: [`geometry`] (sizes and layouts, and the output-size formula),
//! [`plan`] (how the work is cut into tiles and tasks), [`pack`] (weights into panels),
//! [`staging`] (inputs and gradients into the layouts the kernels read), [`tile`] (storing
//! tiles), [`forward`], [`backward`], [`fused_pool`] and [`winograd`] (the forward of 3 x 3,
//! stride-1 'same' convolutions of many channels as Winograd's F(2 x 2, 3 x 3); their input
//! gradient, by either tiles, in [`winograd::grad`]), [`winograd4`] (of fewer channels, as
//! F(4 x 4, 3 x 3)) and
//! [`winograd5`] (of 5 x 5 'same' convolutions, as F(2 x 2, 5 x 5), also through a fused
//! 2 x 2 max pool).

mod backward;
mod forward;
mod fused_pool;
mod geometry;
mod grouped;
mod mode_pad;
mod pack;
mod plan;
mod staging;
mod tile;
mod winograd;
mod winograd4;
mod winograd5;

use std::sync::OnceLock;

use cnnc_core::{Reads, Shape};
use forward::position_runs;
use rand_chacha::ChaCha8Rng;

use super::{
    Layer, NormGrad, Stale, check_backward, check_forward, visit_weight_bias,
    visit_weight_bias_ref, zero_param,
};
use crate::config::{Conv2dConfig, PaddingMode, Pool2dConfig};
use crate::error::{Error, Result};
use crate::init::{fan_in_bound, fill_uniform};
use crate::kernels::gemm::{MR, NR, RunTable, Seg, panels};
use crate::param::{Entry, EntryRef, Param};
use crate::scratch;
use crate::tensor::{Mode, check_len};
use fused_pool::FusedPool;
use geometry::Geom;
use grouped::Grouped;
use mode_pad::ModePad;
use pack::{live_cols, runs_in};
use plan::WgradBlock;
pub use tile::ChannelStore;
use tile::TileStore;
use winograd::Tiling;

/// What a `&self` forward pass applies besides the convolution.
#[derive(Clone, Copy, Debug)]
enum Apply<'a> {
    /// What the layer applies in the model: the ReLU and max pool it fuses.
    Own,
    /// Nothing: the convolution's own output.
    Unfused,
    /// An inference step's epilogue (the layer fuses nothing else).
    Store(&'a ChannelStore<'a>),
}

/// `torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=...)`
/// on input `[N, in_channels, H, W]` giving `[N, out_channels, H_out, W_out]` (pixel-major inside).
#[derive(Clone, Debug)]
pub struct Conv2d {
    name: String,
    weight_name: String,
    bias_name: String,
    config: Conv2dConfig,
    g: Geom,
    /// `[out_channels, in_channels, kh, kw]` (PyTorch's OIHW).
    weight: Param,
    /// `[out_channels]`, when the layer has a bias.
    bias: Option<Param>,
    /// Runs of a forward receptive field in the padded input.
    runs: RunTable,
    /// When the output has at most four pixels an image: for each position, the forward runs
    /// of its real taps, one table a kernel row, with each one's first step in a forward panel
    /// ([`position_runs`]).
    positions: Vec<Vec<(RunTable, usize)>>,
    /// The one run of a Winograd GEMM's rows: `in_channels` transformed values
    /// ([`winograd`]).
    winograd_runs: RunTable,
    /// The one run of a Winograd input gradient's GEMM rows: `out_channels` transformed `dy`
    /// values ([`winograd::grad`]).
    winograd_back_runs: RunTable,
    /// Runs of an input-gradient receptive field in the padded `dy` (direct path; see
    /// [`Geom::back_runs`]).
    back_runs: RunTable,
    /// The weight as forward panels, `[cout / NR][(ky, kx, ci)][NR]` (`kx` over the columns
    /// that read pixels, [`pack::live_cols`]), zero-padded, for `&self`
    /// inference: packed by its first call after the weights changed and forgotten when they
    /// change ([`Conv2d::pack`]), and by an eval-mode forward likewise. A training forward
    /// does not fill it: it packs into a buffer lent from the training workspace (and hands
    /// panels kept here to it), so training holds no copy of the weights besides their
    /// gradients and the optimizer's state.
    packed: OnceLock<Vec<f32>>,
    /// The flipped weight as input-gradient panels: `[cin / NR][(ky, kx, co < cout)][NR]` (`kx`
    /// over the flipped columns that read pixels), or Winograd's transformed panels of it
    /// ([`winograd::grad`]), packed by each backward pass that computes the input gradient (the
    /// direct path: the kernel rows it reads) into a buffer lent from the training workspace
    /// ([`scratch::lend`]) and handed back at its end (empty between passes), as are `xp`,
    /// `dyp`, `gathered` and `wgrad`: a network holds one set of them, not one per layer.
    packed_back: Vec<f32>,
    /// The bias, zero-padded to whole panels (zeros without one).
    bias_row: Vec<f32>,
    /// Whether the layer applies the ReLU that follows it ([`Conv2d::fuse_relu`]).
    relu: bool,
    /// Whether `backward`'s `dy` arrives masked by that ReLU ([`Conv2d::relu_grad_masked`]).
    relu_masked: bool,
    /// The max pool after the ReLU, when the layer applies it too.
    pool: Option<FusedPool>,
    /// The stencil that computes the layer instead when it has `groups > 1` (the dense
    /// buffers then stay empty).
    grouped: Option<Grouped>,
    /// The input padded as `padding_mode` says, when it is not zeros (the convolution then
    /// runs unpadded on that copy, and `g` describes that).
    mode_pad: Option<ModePad>,
    /// Whether `packed` and `bias_row` may be out of date (`packed_back` is packed by every
    /// backward pass).
    stale: Stale,
    /// The zero-padded input, `[N][ph + H + ph_end][pw + W + pw_end][cin]` plus `MR` zeros the
    /// weight-gradient kernel may read past the last pixel; backward pads the input again from
    /// the activation buffer the network keeps anyway (not for a layer without padding, whose
    /// weight gradient reads the input in place: this stays empty).
    xp: Vec<f32>,
    /// The padded `dy` (see [`Geom::padded_dy`]).
    dyp: Vec<f32>,
    /// The flipped kernel's panels of each phase of the strided input gradient (lent from the
    /// training workspace for the length of a backward pass).
    phase_panels: Vec<f32>,
    /// Row blocks of the weight gradient, in row order (see [`WgradBlock`]).
    wgrad_blocks: Vec<WgradBlock>,
    /// The weight gradient, `[(ky, kx, ci)][co < cs]`.
    wgrad: Vec<f32>,
    /// The bias gradient.
    bgrad: Vec<f32>,
}

impl Conv2d {
    /// Builds the layer for inputs of spatial size `input_hw`, initialised as PyTorch does:
    /// weight and bias from `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, fan_in = in_channels / groups
    /// * kh * kw, drawn from `rng` (weight first).
    pub fn new(
        name: &str,
        config: &Conv2dConfig,
        input_hw: [usize; 2],
        rng: &mut ChaCha8Rng,
    ) -> Result<Self> {
        let c = config;
        let mode_pad = (c.padding_mode != PaddingMode::Zeros && c.padding_total() != [0, 0])
            .then(|| ModePad::new(c, input_hw));
        // The side after the input is the larger when `same` pads unevenly.
        if let Some(axis) =
            (0..2).find(|&i| c.padding_end[i] > c.padding_mode.max_padding(input_hw[i]))
        {
            return Err(Error::config(
                name,
                format!(
                    "padding {} is too large for padding_mode {} over an input {} pixels {}",
                    c.padding_end[axis],
                    c.padding_mode.word(),
                    input_hw[axis],
                    ["high", "wide"][axis]
                ),
            ));
        }
        let g = match &mode_pad {
            Some(mp) => {
                let unpadded = Conv2dConfig {
                    padding: [0, 0],
                    padding_end: [0, 0],
                    padding_mode: PaddingMode::Zeros,
                    ..c.clone()
                };
                Geom::new(name, &unpadded, mp.padded())?
            }
            None => Geom::new(name, c, input_hw)?,
        };
        if c.groups == 0 || !g.cin.is_multiple_of(c.groups) || !g.cout.is_multiple_of(c.groups) {
            return Err(Error::config(
                name,
                format!(
                    "groups ({}) must divide in_channels ({}) and out_channels ({})",
                    c.groups, g.cin, g.cout
                ),
            ));
        }
        let dense = c.groups == 1;
        let mut weight = zero_param(&[g.cout, g.cin / c.groups, g.kh, g.kw]);
        let bound = fan_in_bound(g.k() / c.groups);
        fill_uniform(weight.value.iter_mut(), bound, rng);
        let bias = c.bias.then(|| {
            let mut b = zero_param(&[g.cout]);
            fill_uniform(b.value.iter_mut(), bound, rng);
            b
        });
        let (_, wp) = g.padded_in();
        let (_, wd, _, _) = g.padded_dy();
        let mut layer = Conv2d {
            name: name.to_owned(),
            weight_name: format!("{name}.weight"),
            bias_name: format!("{name}.bias"),
            config: c.clone(),
            g,
            weight,
            bias,
            runs: RunTable::new(runs_in(g.runs(g.cin, wp), g.kh, g.kw, live_cols(&g))),
            positions: position_runs(&g),
            winograd_runs: RunTable::new(vec![Seg {
                offset: 0,
                len: g.cin,
            }]),
            winograd_back_runs: RunTable::new(vec![Seg {
                offset: 0,
                len: g.cout,
            }]),
            back_runs: RunTable::new(runs_in(g.back_runs(wd), g.kh, g.kw, {
                let cols = live_cols(&g);
                g.kw - cols.end..g.kw - cols.start
            })),
            packed: OnceLock::new(),
            packed_back: Vec::new(),
            bias_row: vec![0.0; g.cs()],
            grouped: (!dense).then(|| Grouped::new(&g, c.groups)),
            mode_pad,
            relu: false,
            relu_masked: false,
            pool: None,
            stale: Stale::default(),
            xp: Vec::new(),
            dyp: Vec::new(),
            phase_panels: Vec::new(),
            wgrad_blocks: if dense {
                WgradBlock::cover(&g)
            } else {
                Vec::new()
            },
            wgrad: Vec::new(),
            bgrad: vec![0.0; g.cout],
        };
        if dense {
            layer.pack()?;
        }
        Ok(layer)
    }

    weight_bias_accessors!();

    /// The layer's arguments.
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// Makes the layer apply the ReLU that follows it in the network: its output becomes
    /// `relu(conv(x))`, computed as each output tile is stored, and `backward` takes `dy` as the
    /// gradient with respect to that output. The model then skips the ReLU layer (it still
    /// exists, for names), which saves a pass over the activations each way and their buffer.
    /// Values are the same as with a separate ReLU, bit for bit. A grouped convolution
    /// (`groups > 1`) cannot: [`Layer::fuse_relu`] refuses for it, and the plan never asks.
    pub fn fuse_relu(&mut self) {
        self.relu = true;
    }

    /// Makes a grouped convolution's forward pass store `clamp(v * scale[c] + shift[c], lo,
    /// hi)` for each output `v` of channel `c` (`affine` `None`: only the clamp; `lo`, `hi` the
    /// infinities: no clamp), as it stores each pixel: an eval-mode batch norm (`scale` and
    /// `shift` as `BatchNorm2d` computes them) and a ReLU or ReLU6 after a depthwise
    /// convolution, bit for bit, without their passes. Inference only: `backward` stays the
    /// convolution's own. `None` as `affine` with infinite bounds turns it off. Returns `false`
    /// (and does nothing) for a dense convolution (`groups` 1) or factors not one per channel.
    pub fn fuse_channel_store(
        &mut self,
        affine: Option<(Vec<f32>, Vec<f32>)>,
        lo: f32,
        hi: f32,
    ) -> bool {
        let Some(grouped) = &mut self.grouped else {
            return false;
        };
        if let Some((scale, shift)) = &affine
            && (scale.len() != self.g.cout || shift.len() != self.g.cout)
        {
            return false;
        }
        let off = affine.is_none() && lo == f32::NEG_INFINITY && hi == f32::INFINITY;
        grouped.set_store((!off).then_some(grouped::OwnedStore { affine, lo, hi }));
        true
    }

    /// Declares that `backward`'s `dy` arrives already masked by the fused ReLU (the next layer
    /// masks it, see [`crate::layers::MaxPool2d::mask_relu_grad`]), so the layer does not mask it
    /// again: when it needs no input gradient and its channels fill whole panels, the weight
    /// gradient then reads `dy` where it lies, without staging it.
    pub fn relu_grad_masked(&mut self) {
        self.relu_masked = true;
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        let [height, width] = [0, 1].map(|i| {
            let padded = [self.g.ih, self.g.iw][i];
            padded
                - self
                    .mode_pad
                    .as_ref()
                    .map_or(0, |_| self.config.padding_total()[i])
        });
        Shape::Chw([self.g.cin, height, width])
    }

    fn output_shape(&self) -> Shape {
        let (height, width) = match &self.pool {
            Some(pool) => (pool.oh, pool.ow),
            None => (self.g.oh, self.g.ow),
        };
        Shape::Chw([self.g.cout, height, width])
    }

    fn batch_grain(&self) -> Option<usize> {
        self.dense_grain()
    }

    /// Pads into scratch memory; reads the packed weights (see [`Layer::infer`] for the case a
    /// change through `weight_mut` left them out of date).
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (_, ny) = check_forward(self, x, y, batch)?;
        self.infer_with(x, y, batch, ny, Apply::Own)
    }

    fn infer_unfused(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let name = &self.name;
        check_len(name, "forward input", self.input_shape(), batch, x.len())?;
        let ny = check_len(name, "forward output", self.unfused_shape(), batch, y.len())?;
        self.infer_with(x, y, batch, ny, Apply::Unfused)
    }

    /// Refuses (a bug in cnnc's plan) when the layer fuses a pool (or a ReLU the store does not
    /// clamp at 0), when a grouped convolution is given a residual or a concatenation's
    /// channels, or when the factors, the residual or the concatenation's channels are short.
    fn infer_store(
        &self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        store: &ChannelStore<'_>,
    ) -> Result<()> {
        let name = &self.name;
        check_len(name, "forward input", self.input_shape(), batch, x.len())?;
        let (cout, oh, ow) = (self.g.cout, self.g.oh, self.g.ow);
        let (channels, offset) = store.slice.map_or((cout, 0), |(o, c)| (c, o));
        let shape = Shape::Chw([channels, oh, ow]);
        let ny = check_len(name, "forward output", shape, batch, y.len())?;
        let refused = if self.pool.is_some() || (self.relu && store.lo != 0.0) {
            Some("applies a ReLU or pool of its own")
        } else if self.grouped.is_some() && (store.residual.is_some() || store.slice.is_some()) {
            Some("is grouped and cannot add a residual or store into a concatenation")
        } else if store.residual.is_some() && store.slice.is_some() {
            Some("cannot add a residual as it stores into a concatenation")
        } else if offset + cout > channels {
            Some("fits the channels of the concatenation")
        } else if store
            .affine
            .is_some_and(|(a, b)| a.len() != cout || b.len() != cout)
        {
            Some("has a factor per output channel")
        } else if store.residual.is_some_and(|r| r.len() < ny) {
            Some("reads a residual as large as its output")
        } else {
            None
        };
        if let Some(what) = refused {
            return Err(Error::State(format!(
                "cnnc bug: layer `{name}` applies an epilogue the plan gave it, but it {what}"
            )));
        }
        self.infer_with(x, y, batch, ny, Apply::Store(store))
    }

    /// Leaves its padded input for `backward`. In eval mode the forward panels are packed once
    /// and kept until the weights change, as `&self` inference keeps them; a training forward
    /// packs them into the training workspace each step.
    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, mode: Mode) -> Result<()> {
        let (nx, ny) = check_forward(self, x, y, batch)?;
        let keep = mode == Mode::Eval;
        let Some(mut mode_pad) = self.mode_pad.take() else {
            return self.forward_padded(x, y, batch, ny, keep);
        };
        mode_pad.pad(&x[..nx], batch);
        let result = self.forward_padded(&mode_pad.x, y, batch, ny, keep);
        self.mode_pad = Some(mode_pad);
        result
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
        let Some(mut mode_pad) = self.mode_pad.take() else {
            return self.backward_padded(x, y, dy, dx, batch, ny, None, false);
        };
        mode_pad.pad(&x[..nx], batch);
        let result = match dx {
            Some(dx) => {
                mode_pad.grow_dx(batch);
                let mut padded_dx = std::mem::take(&mut mode_pad.dx);
                let result = self.backward_padded(
                    &mode_pad.x,
                    y,
                    dy,
                    Some(&mut padded_dx),
                    batch,
                    ny,
                    None,
                    false,
                );
                mode_pad.dx = padded_dx;
                mode_pad.fold(dx, batch);
                result
            }
            None => self.backward_padded(&mode_pad.x, y, dy, None, batch, ny, None, false),
        };
        self.mode_pad = Some(mode_pad);
        result
    }

    /// The input, and the output only to mask `dy` by the fused ReLU (with a fused pool, the
    /// positions the pool kept do that).
    fn backward_reads(&self) -> Reads {
        Reads {
            inputs: true,
            output: self.grouped.is_none() && self.relu && !self.relu_masked && self.pool.is_none(),
        }
    }

    fn fuse_relu(&mut self) -> bool {
        if self.grouped.is_some() {
            return false;
        }
        Conv2d::fuse_relu(self);
        true
    }

    fn fuse_max_pool(&mut self, config: &Pool2dConfig) -> bool {
        let fused = self.grouped.is_none() && Conv2d::fuse_max_pool(self, config);
        if fused {
            // The pooled layer may take another path (the direct one for 3 x 3 kernels,
            // F(2 x 2, 5 x 5) for 5 x 5 ones): panels packed for the unpooled one go.
            self.packed.take();
        }
        fused
    }

    fn relu_grad_masked(&mut self) {
        Conv2d::relu_grad_masked(self);
    }

    fn as_conv_mut(&mut self) -> Option<&mut Conv2d> {
        Some(self)
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        let names = [self.weight_name.as_str(), self.bias_name.as_str()];
        self.stale.mark();
        visit_weight_bias(f, names, &mut self.weight, self.bias.as_mut());
        // The forward panels are forgotten (the next `infer` packs them, a training forward packs
        // its own into the workspace) and the bias row copied; the input-gradient panels are
        // packed by each backward pass. A wrong shape is reported by the next forward.
        if self.grouped.is_none() {
            let _ = self.pack();
        }
    }

    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        let names = [self.weight_name.as_str(), self.bias_name.as_str()];
        visit_weight_bias_ref(f, names, &self.weight, self.bias.as_ref());
    }
}

impl Conv2d {
    /// The forward pass over `x`, already padded when the padding mode is not zeros.
    /// `keep`: keep the forward panels packed (eval mode, [`Layer::forward`]).
    fn forward_padded(
        &mut self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
        keep: bool,
    ) -> Result<()> {
        if let Some(grouped) = &mut self.grouped {
            grouped.forward(self.g, &self.weight, self.bias.as_ref(), x, y, batch);
            return Ok(());
        }
        self.forward_batch(x, y, batch, ny, keep)
    }

    /// Which Winograd tiles the forward runs as, if any ([`winograd::forward_tiling`]).
    fn winograd(&self) -> Option<Tiling> {
        let pool = self.pool.as_ref().map(|pool| [pool.kh, pool.kw]);
        winograd::forward_tiling(&self.g, self.config.groups, pool)
    }

    /// The forward of `batch` images `x` (unpadded) as Winograd's `tiling` with its panels and
    /// bias row `weights`, into `y` through `store`, or through the fused ReLU and max pool
    /// `pool` (F(2 x 2, 5 x 5) only: [`winograd::forward_tiling`] takes no other with a pool).
    #[allow(clippy::too_many_arguments)]
    fn winograd_forward(
        &self,
        tiling: Tiling,
        x: &[f32],
        weights: (&[f32], &[f32]),
        y: &mut [f32],
        batch: usize,
        store: TileStore<'_>,
        pool: Option<&mut FusedPool>,
    ) {
        match (tiling, pool) {
            (Tiling::F2R5, Some(pool)) => self.winograd5_pooled(x, weights, y, batch, pool),
            (Tiling::F2R5, None) => self.winograd5_stored(x, weights, y, batch, store),
            (Tiling::F2, None) => self.winograd_stored(x, weights, y, batch, store),
            (Tiling::F4, None) => self.winograd4_stored(x, weights, y, batch, store),
            (_, Some(_)) => unreachable!("F(2 x 2, 3 x 3) and F(4 x 4, 3 x 3) are not pooled"),
        }
    }

    /// Which Winograd tiles the input gradient runs as, if any ([`winograd::grad::chosen`]).
    fn winograd_dx(&self) -> Option<winograd::grad::DxTiling> {
        winograd::grad::chosen(&self.g, self.config.groups)
    }

    /// Whether backward computes any parameter gradient: not when the weight and the bias are
    /// frozen (their gradients stay as they are, as PyTorch computes none).
    fn trains_params(&self) -> bool {
        self.weight.requires_grad || self.bias.as_ref().is_some_and(|b| b.requires_grad)
    }

    /// The convolution's own output shape, before the ReLU and pool it may apply.
    fn unfused_shape(&self) -> Shape {
        Shape::Chw([self.g.cout, self.g.oh, self.g.ow])
    }

    /// [`Layer::infer`] into `y[..ny]`, applying what `apply` says.
    fn infer_with(
        &self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
        apply: Apply<'_>,
    ) -> Result<()> {
        let Some(mode_pad) = &self.mode_pad else {
            return self.infer_padded(x, y, batch, ny, apply);
        };
        let nx = batch * self.input_shape().numel();
        let mut padded = scratch::take(mode_pad.padded_len(batch), scratch::ANY, 0.0);
        mode_pad.pad_into(&x[..nx], &mut padded, batch);
        self.infer_padded(&padded, y, batch, ny, apply)
    }

    /// [`Conv2d::forward_padded`] from `&self` (see [`Conv2d::infer_batch`]).
    fn infer_padded(
        &self,
        x: &[f32],
        y: &mut [f32],
        batch: usize,
        ny: usize,
        apply: Apply<'_>,
    ) -> Result<()> {
        if let Some(grouped) = &self.grouped {
            let len = grouped.wt_len();
            let mut wt = scratch::take(len, scratch::ANY, 0.0);
            let (g, bias) = (self.g, self.bias.as_ref());
            let store = match apply {
                Apply::Own => grouped.store(),
                Apply::Unfused => None,
                Apply::Store(map) => Some(grouped::Store {
                    affine: map.affine,
                    lo: map.lo,
                    hi: map.hi,
                }),
            };
            grouped.forward_with(&mut wt[..len], g, &self.weight, bias, x, y, batch, store);
            return Ok(());
        }
        self.infer_batch(x, y, batch, ny, apply)
    }

    /// The backward pass over `x` (and into `dx`), padded when the padding mode is not zeros.
    /// With `norm`, `dy` is that batch norm's input gradient, staged as it is computed
    /// ([`Conv2d::backward_from_norm`]). With `add_dx`, the input gradient is added into what
    /// `dx` holds as it is stored ([`Conv2d::backward_from_norm_adding`]), not written.
    #[allow(clippy::too_many_arguments)]
    fn backward_padded(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
        ny: usize,
        norm: Option<&NormGrad<'_>>,
        add_dx: bool,
    ) -> Result<()> {
        if let Some(grouped) = &mut self.grouped {
            let g = self.g;
            grouped.backward(g, &mut self.weight, self.bias.as_mut(), x, dy, dx, batch);
            return Ok(());
        }
        if let Some(pool) = &self.pool
            && pool.indexed < ny
        {
            return Err(Error::State(format!(
                "layer `{}`: backward for a batch of {batch} needs a forward of at least as many samples first (its fused max pool's positions)",
                self.name
            )));
        }
        self.check_params()?;
        let g = self.g;
        let trains = self.trains_params();
        // The weight gradient's buffer is borrowed first: the workspace lends the smallest free
        // buffer that fits, and a 512-channel layer's `dy`, borrowed before it, took the one its
        // gradient needed, which then made the workspace allocate a second (ResNet-18: 9.4 MB).
        // The weight gradient pads the input itself, a group of images at a time
        // ([`Conv2d::param_grads`]); without padding it reads `x` in place (a strided 1 x 1
        // convolution's only its pixels at the stride, a quarter of a copy's traffic).
        if trains {
            self.wgrad = scratch::lend(g.k() * g.cs());
        }
        // `dy` is staged (widened to whole panels, masked by a fused ReLU, bordered for the
        // input gradient; with a fused pool, routed to the positions its forward picked) unless
        // the gradients can read it as it is: a 1 x 1 convolution's input gradient needs no
        // border, nor does Winograd's (its patches read zeros outside the image).
        let mask = self.relu && !self.relu_masked;
        let winograd_dx = dx.is_some().then(|| self.winograd_dx()).flatten();
        let bordered = dx.is_some() && !g.borderless_dy() && winograd_dx.is_none();
        // A batch norm's input gradient exists only as it is staged.
        let staged = (self.pool.is_some() || bordered || mask || g.cout != g.cs())
            .then_some(bordered)
            .or(norm.map(|_| bordered));
        if let Some(border) = staged {
            let (hd, wd, _, _) = g.staged_dy(border);
            self.dyp = scratch::lend(batch * hd * wd * g.cs());
            match &self.pool {
                Some(pool) => g.unpool_dy(pool, &dy[..ny], &mut self.dyp, batch, border),
                None => g.stage_dy(dy, norm, mask.then_some(y), &mut self.dyp, batch, border),
            }
        }
        if trains {
            self.param_grads(x, dy, staged, batch);
            // Back before the input gradient borrows its panels, which may reuse them.
            scratch::give_back(std::mem::take(&mut self.xp));
            scratch::give_back(std::mem::take(&mut self.wgrad));
        }
        if let Some(dx) = dx {
            if let Some(tiling) = winograd_dx {
                // Winograd's transformed panels of the flipped kernel, and `dy` unbordered.
                let len = winograd::grad::panels_len(&g, tiling);
                let mut packed = scratch::lend(len);
                self.pack_winograd_back(&mut packed[..len], tiling);
                let dy = if staged.is_some() { &self.dyp[..] } else { dy };
                self.winograd_input_grad(dx, dy, (&packed[..len], tiling), batch, add_dx);
                scratch::give_back(packed);
            } else {
                // The direct input gradient reads only the kernel rows that read real pixels
                // (the phases of a strided one fill their own panels).
                if g.direct_back().is_some() {
                    let len = panels(g.cin) * self.back_steps() * NR;
                    let mut packed_back = scratch::lend(len);
                    self.pack_read(true, &mut packed_back[..len]);
                    self.packed_back = packed_back;
                }
                self.input_grad(dx, staged.is_none().then_some(dy), batch, add_dx);
            }
        }
        for buf in [&mut self.dyp, &mut self.packed_back, &mut self.phase_panels] {
            scratch::give_back(std::mem::take(buf));
        }
        Ok(())
    }

    /// `batch` images of `x` zero-padded into a buffer lent from the training workspace, followed
    /// by the `MR` zeros the kernels may read past the last pixel.
    fn padded_input(&self, x: &[f32], batch: usize) -> Vec<f32> {
        let g = self.g;
        let (hp, wp) = g.padded_in();
        let len = batch * hp * wp * g.cin;
        let mut xp = scratch::lend(len + MR);
        g.pad_input(x, &mut xp, batch);
        xp[len..len + MR].fill(0.0);
        xp
    }
}

//! `torch.nn.Dropout` and `torch.nn.Dropout2d` with inverted scaling, one mechanism whose mask
//! is drawn per value or per channel, from the layer's own seeded ChaCha stream so training runs
//! are reproducible (and identical in generated and dynamic models).

use std::marker::PhantomData;

use cnnc_core::Shape;
use rand_chacha::ChaCha8Rng;

use super::{Layer, check_backward, check_forward, image_input};
use crate::error::{Error, Result};
use crate::init::unit_f32;
use crate::tensor::Mode;

/// Length of a ChaCha stream in 32-bit words: a 64-bit block counter times 16 words per block.
const STREAM_WORDS: u128 = 1 << 68;

/// Which values share one draw of a dropout mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    /// Every value its own (`nn.Dropout`).
    Value,
    /// Each channel of each sample, whole (`nn.Dropout2d`), over this many channels.
    Channel(usize),
}

/// Marks [`Dropout`]: a mask value per value.
#[derive(Clone, Copy, Debug)]
pub struct PerValue;

/// Marks [`Dropout2d`]: a mask value per channel of each sample.
#[derive(Clone, Copy, Debug)]
pub struct PerChannel;

/// What a [`MaskedDropout`] draws a mask value for: [`PerValue`] or [`PerChannel`].
pub trait MaskUnit: Clone + std::fmt::Debug + Send + Sync + 'static {}

impl MaskUnit for PerValue {}

impl MaskUnit for PerChannel {}

/// `torch.nn.Dropout(p)`, any shape.
pub type Dropout = MaskedDropout<PerValue>;

/// `torch.nn.Dropout2d(p)`, on `[C, H, W]` images.
pub type Dropout2d = MaskedDropout<PerChannel>;

/// Dropout with inverted scaling, drawing one mask value per value ([`Dropout`]) or per channel
/// of each sample ([`Dropout2d`]): in training each value (or each channel, whole) is zeroed
/// with probability `p` and the others scaled by `1 / (1 - p)`; in evaluation it is the
/// identity. The draws come in order (per sample, then value or channel) from the layer's
/// stream.
#[derive(Clone, Debug)]
pub struct MaskedDropout<G> {
    name: String,
    dims: Shape,
    p: f32,
    unit: Unit,
    rng: ChaCha8Rng,
    /// Per draw of the last training forward: 0 or `1 / (1 - p)`. Grows to the largest batch
    /// seen, then is reused.
    mask: Vec<f32>,
    /// Mode of the last forward (backward must match it).
    mode: Mode,
    kind: PhantomData<G>,
}

impl Dropout {
    /// Builds the layer for per-sample shape `dims`, drawing masks from `rng` (see
    /// [`crate::init::dropout_rng`]). `p` must lie in `[0, 1]`, as PyTorch requires.
    pub fn new(name: &str, dims: Shape, p: f32, rng: ChaCha8Rng) -> Result<Self> {
        Self::with_granularity(name, dims, p, rng, Unit::Value)
    }
}

impl Dropout2d {
    /// Builds the layer for per-sample image shape `dims`, drawing masks from `rng` (see
    /// [`crate::init::dropout_rng`]). `p` must lie in `[0, 1]`, as PyTorch requires.
    pub fn new(name: &str, dims: Shape, p: f32, rng: ChaCha8Rng) -> Result<Self> {
        let (channels, _, _) = image_input(name, "dropout2d", dims)?;
        Self::with_granularity(name, dims, p, rng, Unit::Channel(channels))
    }
}

impl<G: MaskUnit> MaskedDropout<G> {
    fn with_granularity(
        name: &str,
        dims: Shape,
        p: f32,
        rng: ChaCha8Rng,
        unit: Unit,
    ) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::config(
                name,
                format!("dropout probability has to be between 0 and 1, found {p}"),
            ));
        }
        Ok(MaskedDropout {
            name: name.to_owned(),
            dims,
            p,
            unit,
            rng,
            mask: Vec::new(),
            mode: Mode::Eval,
            kind: PhantomData,
        })
    }

    /// The probability of zeroing a value (or a channel).
    pub fn p(&self) -> f32 {
        self.p
    }

    /// How many mask values `batch` samples draw.
    fn draws(&self, batch: usize) -> usize {
        match self.unit {
            Unit::Value => batch * self.dims.numel(),
            Unit::Channel(channels) => batch * channels,
        }
    }

    /// `out = v * mask` for `batch` samples. Per channel, the internal layout is pixel-major,
    /// so each pixel's channels meet the sample's mask in order.
    fn apply(&self, v: &[f32], out: &mut [f32], batch: usize) {
        let Unit::Channel(channels) = self.unit else {
            for ((o, &v), &m) in out.iter_mut().zip(v).zip(&self.mask) {
                *o = v * m;
            }
            return;
        };
        let per_sample = self.dims.numel();
        for ((v, out), mask) in v
            .chunks_exact(per_sample)
            .zip(out.chunks_exact_mut(per_sample))
            .zip(self.mask.chunks_exact(channels))
            .take(batch)
        {
            for (v, out) in v.chunks_exact(channels).zip(out.chunks_exact_mut(channels)) {
                for ((o, &v), &m) in out.iter_mut().zip(v).zip(mask) {
                    *o = v * m;
                }
            }
        }
    }

    /// Applies the mask of the last training forward again (same `batch` or smaller), without
    /// drawing: for gradient checks, which must hold the mask fixed.
    pub fn forward_same_mask(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        if self.mode != Mode::Train || self.mask.len() < self.draws(batch) {
            return Err(Error::State(format!(
                "layer `{}`: no training mask for a batch of {batch} to reuse",
                self.name
            )));
        }
        self.apply(&x[..n], &mut y[..n], batch);
        Ok(())
    }
}

impl<G: MaskUnit> Layer for MaskedDropout<G> {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.dims
    }

    fn output_shape(&self) -> Shape {
        self.dims
    }

    /// The identity, as in evaluation mode.
    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        y[..n].copy_from_slice(&x[..n]);
        Ok(())
    }

    fn forward(&mut self, x: &[f32], y: &mut [f32], batch: usize, mode: Mode) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        self.mode = mode;
        if mode == Mode::Eval {
            y[..n].copy_from_slice(&x[..n]);
            return Ok(());
        }
        let draws = self.draws(batch);
        if self.mask.len() < draws {
            self.mask.resize(draws, 0.0);
        }
        // PyTorch returns zeros for p = 1 instead of scaling by infinity.
        let keep = 1.0 - self.p;
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
        // Drawn sequentially: the mask is a function of the seed and the step alone.
        for m in &mut self.mask[..draws] {
            *m = if unit_f32(&mut self.rng) < keep {
                scale
            } else {
                0.0
            };
        }
        self.apply(&x[..n], &mut y[..n], batch);
        Ok(())
    }

    fn backward(
        &mut self,
        x: &[f32],
        y: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) -> Result<()> {
        let (n, _) = check_backward(self, x, y, dy, dx.as_deref(), batch)?;
        let Some(dx) = dx else { return Ok(()) };
        match self.mode {
            Mode::Eval => dx[..n].copy_from_slice(&dy[..n]),
            Mode::Train => {
                if self.mask.len() < self.draws(batch) {
                    return Err(Error::State(format!(
                        "layer `{}`: backward for a batch of {batch} larger than the last forward's",
                        self.name
                    )));
                }
                self.apply(&dy[..n], &mut dx[..n], batch);
            }
        }
        Ok(())
    }

    fn rng_state(&self) -> Option<u128> {
        Some(self.rng.get_word_pos())
    }

    fn set_rng_state(&mut self, state: u128) -> Result<()> {
        if state >= STREAM_WORDS {
            return Err(Error::State(format!(
                "layer `{}`: random-stream position {state} is past the stream's end (2^68 words)",
                self.name
            )));
        }
        self.rng.set_word_pos(state);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::dropout_rng;

    const DIMS: Shape = Shape::Chw([5, 3, 2]);

    fn forward(layer: &mut Dropout2d, batch: usize, mode: Mode) -> (Vec<f32>, Vec<f32>) {
        let x: Vec<f32> = (0..DIMS.numel() * batch).map(|i| 1.0 + i as f32).collect();
        let mut y = vec![0.0; x.len()];
        layer.forward(&x, &mut y, batch, mode).unwrap();
        (x, y)
    }

    #[test]
    fn whole_channels_are_zeroed_or_scaled() {
        let mut layer = Dropout2d::new("d", DIMS, 0.5, dropout_rng(3, 1)).unwrap();
        let (x, y) = forward(&mut layer, 4, Mode::Train);
        let (mut zeroed, mut kept) = (0, 0);
        for (x, y) in x.chunks(DIMS.numel()).zip(y.chunks(DIMS.numel())) {
            for c in 0..5 {
                // Pixel-major: channel c of every pixel.
                let ratios: Vec<f32> = (0..6).map(|p| y[p * 5 + c] / x[p * 5 + c]).collect();
                assert!(ratios.iter().all(|&r| r == ratios[0]), "{ratios:?}");
                match ratios[0] {
                    0.0 => zeroed += 1,
                    2.0 => kept += 1,
                    other => panic!("ratio {other}"),
                }
            }
        }
        assert!(zeroed > 0 && kept > 0, "{zeroed} zeroed, {kept} kept");
        // Backward applies the same mask.
        let dy = vec![1.0; x.len()];
        let mut dx = vec![0.0; x.len()];
        layer.backward(&x, &y, &dy, Some(&mut dx), 4).unwrap();
        for ((&dx, &x), &y) in dx.iter().zip(&x).zip(&y) {
            assert_eq!(dx, y / x);
        }
        // Four samples of five channels: 20 draws.
        assert_eq!(layer.rng_state(), Some(20));
    }

    #[test]
    fn evaluation_and_extreme_probabilities() {
        let mut layer = Dropout2d::new("d", DIMS, 0.5, dropout_rng(0, 0)).unwrap();
        let (x, y) = forward(&mut layer, 2, Mode::Eval);
        assert_eq!(x, y);
        let mut none = Dropout2d::new("d", DIMS, 0.0, dropout_rng(0, 0)).unwrap();
        let (x, y) = forward(&mut none, 2, Mode::Train);
        assert_eq!(x, y);
        let mut all = Dropout2d::new("d", DIMS, 1.0, dropout_rng(0, 0)).unwrap();
        let (_, y) = forward(&mut all, 2, Mode::Train);
        assert!(y.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn same_seed_same_masks_and_flat_inputs_are_refused() {
        let mut a = Dropout2d::new("d", DIMS, 0.3, dropout_rng(7, 2)).unwrap();
        let mut b = Dropout2d::new("d", DIMS, 0.3, dropout_rng(7, 2)).unwrap();
        assert_eq!(
            forward(&mut a, 3, Mode::Train),
            forward(&mut b, 3, Mode::Train)
        );
        let flat = Dropout2d::new("d", Shape::Flat(4), 0.3, dropout_rng(0, 0));
        assert!(matches!(flat, Err(Error::Config { .. })));
        assert!(Dropout2d::new("d", DIMS, 1.5, dropout_rng(0, 0)).is_err());
    }
}

//! `torch.nn.Dropout` and `torch.nn.Dropout2d` with inverted scaling, drawing their masks from the
//! layer's own seeded ChaCha stream so training runs are reproducible (and identical in generated
//! and dynamic models).

use cnnc_core::Shape;
use rand_chacha::ChaCha8Rng;

use super::{Layer, check_backward, check_forward, image_input};
use crate::error::{Error, Result};
use crate::init::unit_f32;
use crate::tensor::Mode;

/// Length of a ChaCha stream in 32-bit words: a 64-bit block counter times 16 words per block.
const STREAM_WORDS: u128 = 1 << 68;

/// `torch.nn.Dropout(p)`, any shape: in training each value is zeroed with probability `p` and
/// the others scaled by `1 / (1 - p)`; in evaluation it is the identity.
#[derive(Clone, Debug)]
pub struct Dropout {
    name: String,
    dims: Shape,
    p: f32,
    rng: ChaCha8Rng,
    /// Per value of the last training forward: 0 or `1 / (1 - p)`. Grows to the largest batch
    /// seen, then is reused.
    mask: Vec<f32>,
    /// Mode of the last forward (backward must match it).
    mode: Mode,
}

impl Dropout {
    /// Builds the layer for per-sample shape `dims`, drawing masks from `rng` (see
    /// [`crate::init::dropout_rng`]). `p` must lie in `[0, 1]`, as PyTorch requires.
    pub fn new(name: &str, dims: Shape, p: f32, rng: ChaCha8Rng) -> Result<Self> {
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::config(
                name,
                format!("dropout probability has to be between 0 and 1, found {p}"),
            ));
        }
        Ok(Dropout {
            name: name.to_owned(),
            dims,
            p,
            rng,
            mask: Vec::new(),
            mode: Mode::Eval,
        })
    }

    /// The probability of zeroing a value.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// Applies the mask of the last training forward again (same `batch` or smaller), without
    /// drawing: for gradient checks, which must hold the mask fixed.
    pub fn forward_same_mask(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        if self.mode != Mode::Train || self.mask.len() < n {
            return Err(Error::State(format!(
                "layer `{}`: no training mask for a batch of {batch} to reuse",
                self.name
            )));
        }
        for ((y, &x), &m) in y[..n].iter_mut().zip(&x[..n]).zip(&self.mask) {
            *y = x * m;
        }
        Ok(())
    }
}

impl Layer for Dropout {
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
        if self.mask.len() < n {
            self.mask.resize(n, 0.0);
        }
        // PyTorch returns zeros for p = 1 instead of scaling by infinity.
        let keep = 1.0 - self.p;
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
        // Drawn sequentially: the mask is a function of the seed and the step alone.
        for m in &mut self.mask[..n] {
            *m = if unit_f32(&mut self.rng) < keep {
                scale
            } else {
                0.0
            };
        }
        for ((y, &x), &m) in y[..n].iter_mut().zip(&x[..n]).zip(&self.mask) {
            *y = x * m;
        }
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
                if self.mask.len() < n {
                    return Err(Error::State(format!(
                        "layer `{}`: backward for a batch of {batch} larger than the last forward's",
                        self.name
                    )));
                }
                for ((dx, &dy), &m) in dx[..n].iter_mut().zip(&dy[..n]).zip(&self.mask) {
                    *dx = dy * m;
                }
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

/// `torch.nn.Dropout2d(p)`, on `[C, H, W]` images: in training each channel of each sample is
/// zeroed whole with probability `p` and the others scaled by `1 / (1 - p)`; in evaluation it is
/// the identity. One draw per sample and channel, in that order, from the layer's stream.
#[derive(Clone, Debug)]
pub struct Dropout2d {
    name: String,
    dims: Shape,
    channels: usize,
    p: f32,
    rng: ChaCha8Rng,
    /// Per sample and channel of the last training forward: 0 or `1 / (1 - p)`. Grows to the
    /// largest batch seen, then is reused.
    mask: Vec<f32>,
    /// Mode of the last forward (backward must match it).
    mode: Mode,
}

impl Dropout2d {
    /// Builds the layer for per-sample image shape `dims`, drawing masks from `rng` (see
    /// [`crate::init::dropout_rng`]). `p` must lie in `[0, 1]`, as PyTorch requires.
    pub fn new(name: &str, dims: Shape, p: f32, rng: ChaCha8Rng) -> Result<Self> {
        let (channels, _, _) = image_input(name, "dropout2d", dims)?;
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::config(
                name,
                format!("dropout probability has to be between 0 and 1, found {p}"),
            ));
        }
        Ok(Dropout2d {
            name: name.to_owned(),
            dims,
            channels,
            p,
            rng,
            mask: Vec::new(),
            mode: Mode::Eval,
        })
    }

    /// The probability of zeroing a channel.
    pub fn p(&self) -> f32 {
        self.p
    }

    /// `out = v * mask` for `batch` samples: the internal layout is pixel-major, so each
    /// pixel's channels meet the sample's mask in order.
    fn apply(&self, v: &[f32], out: &mut [f32], batch: usize) {
        let per_sample = self.dims.numel();
        for ((v, out), mask) in v
            .chunks_exact(per_sample)
            .zip(out.chunks_exact_mut(per_sample))
            .zip(self.mask.chunks_exact(self.channels))
            .take(batch)
        {
            for (v, out) in v
                .chunks_exact(self.channels)
                .zip(out.chunks_exact_mut(self.channels))
            {
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
        if self.mode != Mode::Train || self.mask.len() < batch * self.channels {
            return Err(Error::State(format!(
                "layer `{}`: no training mask for a batch of {batch} to reuse",
                self.name
            )));
        }
        self.apply(&x[..n], &mut y[..n], batch);
        Ok(())
    }
}

impl Layer for Dropout2d {
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
        let draws = batch * self.channels;
        if self.mask.len() < draws {
            self.mask.resize(draws, 0.0);
        }
        // PyTorch returns zeros for p = 1 instead of scaling by infinity.
        let keep = 1.0 - self.p;
        let scale = if keep > 0.0 { 1.0 / keep } else { 0.0 };
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
                if self.mask.len() < batch * self.channels {
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

//! `torch.nn.Dropout` with inverted scaling, drawing its mask from the layer's own seeded ChaCha
//! stream so training runs are reproducible (and identical in generated and dynamic models).

use rand_chacha::ChaCha8Rng;

use super::{Layer, check_backward, check_forward};
use crate::error::{Error, Result};
use crate::init::unit_f32;
use crate::tensor::{Dims, Mode};

/// Length of a ChaCha stream in 32-bit words: a 64-bit block counter times 16 words per block.
const STREAM_WORDS: u128 = 1 << 68;

/// `torch.nn.Dropout(p)`, any shape: in training each value is zeroed with probability `p` and
/// the others scaled by `1 / (1 - p)`; in evaluation it is the identity.
#[derive(Debug)]
pub struct Dropout {
    name: String,
    dims: Dims,
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
    pub fn new(name: &str, dims: Dims, p: f32, rng: ChaCha8Rng) -> Result<Self> {
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

    fn input_dims(&self) -> Dims {
        self.dims
    }

    fn output_dims(&self) -> Dims {
        self.dims
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

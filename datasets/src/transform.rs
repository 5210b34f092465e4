//! From u8 dataset images to the f32 tensors a model takes: scaling to [0, 1] and per-channel
//! normalisation, bridging of a dataset whose images differ from the model input in a way that can
//! be adapted (1→3 channels, symmetric zero padding), and opt-in CIFAR-style augmentation.
//!
//! The order of operations is torchvision's `[Pad(p), RandomCrop(size, padding), RandomHorizontalFlip,
//! ToTensor, Normalize(mean, std)]`: padding and cropping act on u8 pixels, so a padded pixel is a
//! zero pixel and normalises to `(0 - mean) / std`, not to 0. Each value is computed exactly as
//! PyTorch does in f32, `(v / 255 - mean) / std`, through a per-channel lookup table.

use std::fmt;

use rand_core::Rng;
use serde::{Deserialize, Serialize};

use super::{DataError, ImageShape};

/// Per-channel mean and standard deviation of pixels scaled to [0, 1], as given to
/// `torchvision.transforms.Normalize(mean, std)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Mean of each channel, `[C]`.
    pub mean: Vec<f32>,
    /// Standard deviation of each channel, `[C]`.
    pub std: Vec<f32>,
}

impl Normalization {
    /// A normalisation from per-channel means and standard deviations.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Self {
        Normalization { mean, std }
    }

    /// Fashion-MNIST's training-set statistics: mean 0.2860, std 0.3530.
    pub fn fashion_mnist() -> Self {
        Self::new(vec![0.2860], vec![0.3530])
    }

    /// MNIST's training-set statistics: mean 0.1307, std 0.3081.
    pub fn mnist() -> Self {
        Self::new(vec![0.1307], vec![0.3081])
    }

    /// CIFAR-10's training-set statistics: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435,
    /// 0.2616).
    pub fn cifar10() -> Self {
        Self::new(vec![0.4914, 0.4822, 0.4465], vec![0.2470, 0.2435, 0.2616])
    }

    /// Mean and population standard deviation of each channel of `images` (`[N, C, H, W]` u8, the
    /// layout of [`super::Dataset::images`]) after scaling to [0, 1]. Computed exactly from a
    /// per-channel histogram; a channel without variance gets std 1 so that it cannot divide by
    /// zero.
    pub fn compute(shape: ImageShape, images: &[u8]) -> Self {
        let plane = shape.height * shape.width;
        let mut histograms = vec![[0u64; 256]; shape.channels];
        if plane > 0 {
            for image in images.chunks_exact(shape.len()) {
                for (histogram, channel) in histograms.iter_mut().zip(image.chunks_exact(plane)) {
                    for &v in channel {
                        histogram[usize::from(v)] += 1;
                    }
                }
            }
        }
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        for histogram in &histograms {
            let count: u64 = histogram.iter().sum();
            let n = count.max(1) as f64;
            let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
            for (v, &k) in histogram.iter().enumerate() {
                let x = v as f64 / 255.0;
                sum += x * k as f64;
                sum_sq += x * x * k as f64;
            }
            let m = sum / n;
            let var = (sum_sq / n - m * m).max(0.0);
            mean.push(m as f32);
            std.push(if var > 0.0 { var.sqrt() as f32 } else { 1.0 });
        }
        Self::new(mean, std)
    }

    /// Checks there is one finite mean and one finite, positive std per channel.
    pub(crate) fn check(&self, channels: usize) -> Result<(), DataError> {
        if self.mean.len() != channels || self.std.len() != channels {
            return Err(DataError::invalid(
                "normalization",
                format!(
                    "{} means and {} stds given for images of {channels} channels; give one of each \
                     per channel",
                    self.mean.len(),
                    self.std.len()
                ),
            ));
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::invalid(
                "normalization",
                format!("std {s} is not a positive number"),
            ));
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::invalid(
                "normalization",
                format!("mean {m} is not a finite number"),
            ));
        }
        Ok(())
    }
}

/// How dataset images are adapted to a model input of another shape: returned as data so that the
/// caller decides how to tell the user (the CLI prints it as a notice).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    /// The dataset's image shape.
    pub from: ImageShape,
    /// The model's input shape.
    pub to: ImageShape,
    /// Zero pixels added on each side, `[above and below, left and right]`.
    pub pad: [usize; 2],
    /// Whether the single grey channel is repeated into three.
    pub repeat_channels: bool,
}

impl fmt::Display for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dataset images are {}, model input is {}:",
            self.from, self.to
        )?;
        let [py, px] = self.pad;
        if py == px && py > 0 {
            write!(f, " padding {py} zero pixels on every side")?;
        } else if py > 0 || px > 0 {
            write!(
                f,
                " padding {py} zero pixels above and below and {px} left and right"
            )?;
        }
        if self.repeat_channels {
            if py > 0 || px > 0 {
                f.write_str(" and")?;
            }
            write!(f, " repeating the grey channel {} times", self.to.channels)?;
        }
        Ok(())
    }
}

/// Standard CIFAR augmentation, torchvision's `RandomCrop(size, padding)` followed by
/// `RandomHorizontalFlip(0.5)`: the image is zero-padded by `padding` pixels on every side, a
/// window of the original size is cut at a uniformly random offset, and it is mirrored with
/// probability 1/2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Zero padding before the random crop, in pixels.
    pub padding: usize,
    /// Whether to mirror half of the images left to right.
    pub horizontal_flip: bool,
}

impl Augment {
    /// The usual CIFAR-10 recipe: `RandomCrop(32, padding=4)` and `RandomHorizontalFlip()`.
    pub fn cifar() -> Self {
        Augment {
            padding: 4,
            horizontal_flip: true,
        }
    }

    /// Draws the crop offset and the flip for one image, in torchvision's order (row offset,
    /// column offset, flip).
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> AugmentDraw {
        let span = 2 * self.padding as u64 + 1;
        let top = uniform_below(rng, span) as isize;
        let left = uniform_below(rng, span) as isize;
        let flip = self.horizontal_flip && rng.next_u32() >> 31 == 1;
        let padding = self.padding as isize;
        AugmentDraw {
            dy: top - padding,
            dx: left - padding,
            flip,
        }
    }
}

/// One image's augmentation: the crop window's top-left corner relative to the unpadded image
/// (torchvision's `i - padding`, `j - padding`) and whether the crop is mirrored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AugmentDraw {
    /// Row of the window's top edge; negative rows are padding.
    pub dy: isize,
    /// Column of the window's left edge; negative columns are padding.
    pub dx: isize,
    /// Whether the window is mirrored left to right.
    pub flip: bool,
}

/// A uniform integer in `0..n` (`n > 0`) without modulo bias (Lemire's multiply-shift with
/// rejection).
pub(crate) fn uniform_below<R: Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

/// Turns one `[C, H, W]` u8 dataset image into the model's `[C', H', W']` f32 input: bridged
/// (padded, channel-repeated), optionally augmented, scaled and normalised.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    input: ImageShape,
    output: ImageShape,
    pad: [usize; 2],
    repeat_channels: bool,
    /// `(v / 255 - mean) / std` for every u8 `v`, one table per dataset channel.
    lut: Vec<[f32; 256]>,
}

impl Transform {
    /// Plans the transform from dataset images of shape `input`, normalised with `normalization`
    /// (one mean/std per dataset channel; a repeated grey channel keeps its statistics), to a
    /// model input of shape `output`. Bridged: 1 → 3 channels, and smaller images padded evenly
    /// with zero pixels (28x28 → 32x32 adds 2 on each side). Anything else is an error saying what
    /// was found and what would work.
    pub fn new(
        input: ImageShape,
        normalization: &Normalization,
        output: ImageShape,
    ) -> Result<Self, DataError> {
        normalization.check(input.channels)?;
        let shape_error = |reason: String| DataError::Shape {
            found: input,
            expected: output,
            reason,
        };
        let repeat_channels = match (input.channels, output.channels) {
            (a, b) if a == b => false,
            (1, 3) => true,
            (a, b) => {
                return Err(shape_error(format!(
                    "{a} channels cannot be turned into {b} (only 1 grey channel is bridged to 3, \
                     by repeating it); convert the images to {b} channels or give the model \
                     {a} input channels"
                )));
            }
        };
        if input.height > output.height || input.width > output.width {
            return Err(shape_error(format!(
                "images larger than the model input are not cropped or resized for training; \
                 resize the images to {}x{} or give the model a {}x{} input",
                output.height, output.width, input.height, input.width
            )));
        }
        let (dy, dx) = (output.height - input.height, output.width - input.width);
        if dy % 2 == 1 || dx % 2 == 1 {
            return Err(shape_error(format!(
                "padding {dy} rows and {dx} columns cannot be split evenly between both sides; \
                 resize the images or change the model input so that the difference is even"
            )));
        }
        if input.is_empty() {
            return Err(shape_error("the images have a zero side".to_owned()));
        }
        let lut = normalization
            .mean
            .iter()
            .zip(&normalization.std)
            .map(|(&mean, &std)| {
                let mut table = [0f32; 256];
                for (v, entry) in table.iter_mut().enumerate() {
                    // Same f32 operations as ToTensor (div 255) then Normalize (sub, div).
                    *entry = (v as f32 / 255.0 - mean) / std;
                }
                table
            })
            .collect();
        Ok(Transform {
            input,
            output,
            pad: [dy / 2, dx / 2],
            repeat_channels,
            lut,
        })
    }

    /// The dataset image shape this transform reads.
    pub fn input_shape(&self) -> ImageShape {
        self.input
    }

    /// The model input shape this transform writes.
    pub fn output_shape(&self) -> ImageShape {
        self.output
    }

    /// How the images are adapted, or `None` when the shapes already agree.
    pub fn bridge(&self) -> Option<Bridge> {
        (self.repeat_channels || self.pad != [0, 0]).then_some(Bridge {
            from: self.input,
            to: self.output,
            pad: self.pad,
            repeat_channels: self.repeat_channels,
        })
    }

    /// Writes one transformed image: `image` is `[C, H, W]` u8 of the input shape, `out` is
    /// `[C', H', W']` f32 of the output shape.
    pub fn apply(&self, image: &[u8], out: &mut [f32]) -> Result<(), DataError> {
        self.apply_augmented(image, AugmentDraw::default(), out)
    }

    /// Like [`Transform::apply`], cutting the window `draw` (from [`Augment::draw`]) out of the
    /// zero-padded, bridged image and mirroring it if asked.
    pub fn apply_augmented(
        &self,
        image: &[u8],
        draw: AugmentDraw,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        if image.len() != self.input.len() || out.len() != self.output.len() {
            return Err(DataError::invalid(
                "transform",
                format!(
                    "got {} input bytes and {} output floats, expected {} ({}) and {} ({})",
                    image.len(),
                    out.len(),
                    self.input.len(),
                    self.input,
                    self.output.len(),
                    self.output
                ),
            ));
        }
        let (h, w) = (self.output.height, self.output.width);
        let (sh, sw) = (self.input.height, self.input.width);
        let plane = sh * sw;
        // Source coordinate of output (0, 0): the crop offset minus the bridging padding.
        let oy = draw.dy - self.pad[0] as isize;
        let ox = draw.dx - self.pad[1] as isize;
        for (c, dst) in out.chunks_exact_mut(h * w).enumerate() {
            let sc = if self.repeat_channels { 0 } else { c };
            let lut = &self.lut[sc];
            let zero = lut[0];
            let src = &image[sc * plane..(sc + 1) * plane];
            for (y, row) in dst.chunks_exact_mut(w).enumerate() {
                let sy = y as isize + oy;
                if sy < 0 || sy >= sh as isize {
                    row.fill(zero);
                    continue;
                }
                let src_row = &src[sy as usize * sw..(sy as usize + 1) * sw];
                for (x, v) in row.iter_mut().enumerate() {
                    let xc = if draw.flip { w - 1 - x } else { x };
                    let sx = xc as isize + ox;
                    *v = if sx >= 0 && sx < sw as isize {
                        lut[usize::from(src_row[sx as usize])]
                    } else {
                        zero
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;

    #[test]
    fn uniform_below_covers_the_range_evenly() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0u32; 9];
        for _ in 0..90_000 {
            counts[uniform_below(&mut rng, 9) as usize] += 1;
        }
        // Each bucket expects 10,000; 5 sigma is about 470.
        assert!(
            counts.iter().all(|&c| c.abs_diff(10_000) < 470),
            "{counts:?}"
        );
    }

    #[test]
    fn compute_matches_direct_formula() {
        let shape = ImageShape::new(2, 1, 2);
        // Channel 0 values 0, 255, 0, 255 (mean 0.5, std 0.5); channel 1 constant 51.
        let images = [0, 255, 51, 51, 0, 255, 51, 51];
        let n = Normalization::compute(shape, &images);
        assert!((n.mean[0] - 0.5).abs() < 1e-7 && (n.std[0] - 0.5).abs() < 1e-7);
        assert!((n.mean[1] - 0.2).abs() < 1e-7);
        assert_eq!(n.std[1], 1.0);
    }
}

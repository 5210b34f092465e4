//! Per-sample tensor shapes; the batch dimension is symbolic and never stored.

use std::fmt;

/// A per-sample shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    /// `[channels, height, width]`.
    Chw([usize; 3]),
    /// `[features]`.
    Flat(usize),
}

impl Shape {
    /// The dimensions, `[C, H, W]` or `[N]`.
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Shape::Chw(d) => d.to_vec(),
            Shape::Flat(n) => vec![n],
        }
    }

    /// The channel count: `C` of an image, the features of a flat vector (dimension 1 of the
    /// batched tensor, the one PyTorch's `PReLU` and `BatchNorm1d` call channels).
    pub fn channels(&self) -> usize {
        match *self {
            Shape::Chw([c, _, _]) => c,
            Shape::Flat(n) => n,
        }
    }

    /// Number of elements per sample (saturating; shapes are checked far below overflow).
    pub fn numel(&self) -> usize {
        match *self {
            Shape::Chw([c, h, w]) => c.saturating_mul(h).saturating_mul(w),
            Shape::Flat(n) => n,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Chw([c, h, w]) => write!(f, "[{c}, {h}, {w}]"),
            Shape::Flat(n) => write!(f, "[{n}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Shape;

    #[test]
    fn channels_is_dimension_one_of_the_batched_tensor() {
        assert_eq!(Shape::Chw([3, 4, 5]).channels(), 3);
        assert_eq!(Shape::Flat(7).channels(), 7);
    }

    #[test]
    fn numel_and_display_follow_pytorch_order() {
        assert_eq!(Shape::Chw([3, 4, 5]).numel(), 60);
        assert_eq!(Shape::Flat(7).numel(), 7);
        assert_eq!(Shape::Chw([3, 4, 5]).to_string(), "[3, 4, 5]");
        assert_eq!(Shape::Flat(7).to_string(), "[7]");
    }
}

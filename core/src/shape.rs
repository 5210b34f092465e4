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

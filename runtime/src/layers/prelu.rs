//! `torch.nn.PReLU`: a leaky ReLU whose negative slope is learnt, one for all channels or one per
//! channel (the features of flat inputs).

use cnnc_core::Shape;
use ndarray::ArrayD;

use super::{Layer, check_backward, check_forward, check_param};
use crate::error::{Error, Result};
use crate::param::{Entry, EntryRef, Param};

/// PyTorch's initial slope (`init=0.25`).
const INIT: f32 = 0.25;

/// `torch.nn.PReLU(num_parameters)`, any shape: `x` where `x > 0`, else `weight[c] * x`, `c` the
/// channel (or feature) when `num_parameters` is their count, else 0. Backward: `dy` or
/// `weight[c] * dy`, and the weight's gradient sums `x * dy` over the batch where `x <= 0`.
#[derive(Clone, Debug)]
pub struct Prelu {
    name: String,
    weight_name: String,
    dims: Shape,
    /// `[num_parameters]`.
    pub weight: Param,
}

impl Prelu {
    /// Builds the layer for per-sample shape `dims`, its slopes at PyTorch's 0.25.
    /// `num_parameters` must be 1 or the channel (feature) count.
    pub fn new(name: &str, dims: Shape, num_parameters: usize) -> Result<Self> {
        let channels = dims.channels();
        if num_parameters != 1 && num_parameters != channels {
            return Err(Error::config(
                name,
                format!(
                    "prelu num_parameters must be 1 or the input's {channels} channels, found \
                     {num_parameters}"
                ),
            ));
        }
        Ok(Prelu {
            name: name.to_owned(),
            weight_name: format!("{name}.weight"),
            dims,
            weight: Param {
                value: ArrayD::from_elem(vec![num_parameters], INIT),
                grad: ArrayD::zeros(vec![num_parameters]),
            },
        })
    }

    /// `(values per sample, slopes, stride of the channel index)`: the internal layout keeps
    /// each pixel's channels together, so value `i` of a sample has channel `i % channels`.
    fn layout(&self) -> Result<(usize, usize)> {
        let n = self.weight.value.len();
        check_param(&self.name, "weight", &self.weight, &[n])?;
        Ok((self.dims.numel(), n))
    }
}

impl Layer for Prelu {
    fn name(&self) -> &str {
        &self.name
    }

    fn input_shape(&self) -> Shape {
        self.dims
    }

    fn output_shape(&self) -> Shape {
        self.dims
    }

    fn infer(&self, x: &[f32], y: &mut [f32], batch: usize) -> Result<()> {
        let (n, _) = check_forward(self, x, y, batch)?;
        let (_, slopes) = self.layout()?;
        let w: Vec<f32> = self.weight.value.iter().copied().collect();
        let channels = self.dims.channels();
        for (i, (y, &x)) in y[..n].iter_mut().zip(&x[..n]).enumerate() {
            let slope = if slopes == 1 { w[0] } else { w[i % channels] };
            *y = if x > 0.0 { x } else { slope * x };
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
        let (_, slopes) = self.layout()?;
        let w: Vec<f32> = self.weight.value.iter().copied().collect();
        let channels = self.dims.channels();
        let slot = |i: usize| if slopes == 1 { 0 } else { i % channels };
        // Summed in value order, one pass: the same values whatever the thread count.
        let mut grad = vec![0.0f32; slopes];
        for (i, (&x, &dy)) in x[..n].iter().zip(&dy[..n]).enumerate() {
            if x <= 0.0 {
                grad[slot(i)] += x * dy;
            }
        }
        for (g, v) in self.weight.grad.iter_mut().zip(grad) {
            *g = v;
        }
        if let Some(dx) = dx {
            for (i, ((dx, &x), &dy)) in dx[..n].iter_mut().zip(&x[..n]).zip(&dy[..n]).enumerate() {
                *dx = if x > 0.0 { dy } else { w[slot(i)] * dy };
            }
        }
        Ok(())
    }

    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        f(Entry::Param {
            name: &self.weight_name,
            param: &mut self.weight,
        });
    }

    fn visit_ref(&self, f: &mut dyn FnMut(EntryRef<'_>)) {
        f(EntryRef::Param {
            name: &self.weight_name,
            param: &self.weight,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Mode;

    #[test]
    fn slopes_per_channel_follow_the_pixel_major_layout() {
        let dims = Shape::Chw([2, 1, 2]);
        let mut layer = Prelu::new("p", dims, 2).unwrap();
        layer.weight.value = ArrayD::from_shape_vec(vec![2], vec![0.5, 2.0]).unwrap();
        // (pixel 0: c0, c1), (pixel 1: c0, c1).
        let x = [-1.0, -1.0, 3.0, -2.0];
        let mut y = [0.0; 4];
        layer.forward(&x, &mut y, 1, Mode::Train).unwrap();
        assert_eq!(y, [-0.5, -2.0, 3.0, -4.0]);
        let mut dx = [0.0; 4];
        layer.backward(&x, &y, &[1.0; 4], Some(&mut dx), 1).unwrap();
        assert_eq!(dx, [0.5, 2.0, 1.0, 2.0]);
        let grad: Vec<f32> = layer.weight.grad.iter().copied().collect();
        assert_eq!(grad, [-1.0, -3.0]);
    }

    #[test]
    fn num_parameters_is_one_or_the_channels() {
        let dims = Shape::Flat(3);
        assert!(Prelu::new("p", dims, 1).is_ok());
        assert!(Prelu::new("p", dims, 3).is_ok());
        assert!(matches!(
            Prelu::new("p", dims, 2),
            Err(Error::Config { .. })
        ));
        let layer = Prelu::new("p", dims, 3).unwrap();
        assert!(layer.weight.value.iter().all(|&w| w == 0.25));
    }
}

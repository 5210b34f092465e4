//! Shared helpers of the runtime's integration tests: deterministic random data and a
//! finite-difference gradient checker for any [`Layer`].

#![allow(dead_code)]

use cnnc_runtime::config::BatchNorm2dConfig;
use cnnc_runtime::layers::BatchNorm2d;
use cnnc_runtime::{Entry, Layer, Mode, Shape, Visit};

/// A small deterministic generator (SplitMix64), so tests need no extra dependency.
pub struct Rand(pub u64);

impl Rand {
    /// Next value in `[0, 1)`.
    pub fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    /// `n` values from `U(-1, 1)`.
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| 2.0 * self.unit() - 1.0).collect()
    }

    /// `n` distinct values at least `gap` apart and at least `gap` away from 0, in random order:
    /// finite differences of step `< gap / 2` then never cross a kink (ReLU at 0, a max-pool tie).
    pub fn spaced(&mut self, n: usize, gap: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n)
            .map(|i| {
                let k = i as f32 - n as f32 / 2.0;
                (if k >= 0.0 { k + 1.0 } else { k }) * gap
            })
            .collect();
        for i in (1..n).rev() {
            let j = (self.unit() * (i + 1) as f32) as usize % (i + 1);
            v.swap(i, j);
        }
        v
    }
}

/// Finite-difference step: large enough that f32 rounding in the outputs stays far below the
/// tolerance, small enough to stay between kinks of the spaced inputs.
pub const STEP: f32 = 1e-2;

/// `sum(y * r)` in f64.
fn project(y: &[f32], r: &[f32]) -> f64 {
    y.iter()
        .zip(r)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum()
}

/// Asserts analytic and numeric derivatives agree to `|a - n| <= tol * (1 + |n|)`.
fn assert_close(what: &str, index: usize, analytic: f32, numeric: f64, tol: f64) {
    let err = (f64::from(analytic) - numeric).abs();
    assert!(
        err <= tol * (1.0 + numeric.abs()),
        "{what}[{index}]: analytic {analytic} vs finite difference {numeric} (error {err})"
    );
}

/// Checks `layer`'s input gradient and every parameter gradient against central finite
/// differences of `sum(forward(x) * r)` for a random projection `r`. `forward` runs the layer in
/// the mode under test (it must not change the function between calls, e.g. a fixed dropout mask).
pub fn check_layer<L: Layer>(
    layer: &mut L,
    x: &[f32],
    batch: usize,
    rng: &mut Rand,
    tol: f64,
    mut forward: impl FnMut(&mut L, &[f32], &mut [f32]),
) {
    let out_len = layer.output_shape().numel() * batch;
    let in_len = layer.input_shape().numel() * batch;
    assert_eq!(x.len(), in_len);
    let r = rng.vec(out_len);
    let mut y = vec![0.0; out_len];
    forward(layer, x, &mut y);
    let mut dx = vec![0.0; in_len];
    layer.backward(x, &y, &r, Some(&mut dx), batch).unwrap();

    let mut xp = x.to_vec();
    let mut loss_at = |layer: &mut L, xp: &[f32]| {
        let mut y = vec![0.0; out_len];
        forward(layer, xp, &mut y);
        project(&y, &r)
    };
    for i in 0..in_len {
        let orig = xp[i];
        xp[i] = orig + STEP;
        let up = loss_at(layer, &xp);
        xp[i] = orig - STEP;
        let down = loss_at(layer, &xp);
        xp[i] = orig;
        assert_close("dx", i, dx[i], (up - down) / (2.0 * f64::from(STEP)), tol);
    }

    // Parameters: collect the analytic gradients, then perturb each value in turn.
    let mut grads: Vec<(String, Vec<f32>)> = Vec::new();
    layer.visit(&mut |e| {
        if let Entry::Param { name, param } = e {
            grads.push((name.to_owned(), param.grad.iter().copied().collect()));
        }
    });
    for (p, (name, grad)) in grads.iter().enumerate() {
        for (i, &analytic) in grad.iter().enumerate() {
            let nudge = |layer: &mut L, delta: f32| {
                let mut k = 0;
                layer.visit(&mut |e| {
                    if let Entry::Param { param, .. } = e {
                        if k == p
                            && let Some(v) = param.value.iter_mut().nth(i)
                        {
                            *v += delta;
                        }
                        k += 1;
                    }
                });
            };
            nudge(layer, STEP);
            let up = loss_at(layer, &xp);
            nudge(layer, -2.0 * STEP);
            let down = loss_at(layer, &xp);
            nudge(layer, STEP);
            assert_close(
                name,
                i,
                analytic,
                (up - down) / (2.0 * f64::from(STEP)),
                tol,
            );
        }
    }
}

/// `check_layer` with a plain forward in `mode`.
pub fn check_plain<L: Layer>(
    layer: &mut L,
    x: &[f32],
    batch: usize,
    rng: &mut Rand,
    tol: f64,
    mode: Mode,
) {
    check_layer(layer, x, batch, rng, tol, |l, x, y| {
        l.forward(x, y, batch, mode).unwrap()
    });
}

/// A batch norm over `c` channels of `h x w` images whose parameters and running statistics are
/// not their defaults (with `affine`, the weight and bias too), drawn from `rng`.
pub fn batch_norm(
    c: usize,
    h: usize,
    w: usize,
    affine: bool,
    track: bool,
    rng: &mut Rand,
) -> BatchNorm2d {
    let config = BatchNorm2dConfig {
        num_features: c,
        eps: 1e-5,
        momentum: Some(0.1),
        affine,
        track_running_stats: track,
    };
    let mut bn = BatchNorm2d::new("bn", &config, Shape::Chw([c, h, w])).unwrap();
    if affine {
        bn.weight
            .value
            .iter_mut()
            .for_each(|v| *v = 0.5 + rng.unit());
        bn.bias.value.iter_mut().for_each(|v| *v = rng.unit() - 0.5);
    }
    bn.running_mean
        .iter_mut()
        .for_each(|v| *v = rng.unit() - 0.5);
    bn.running_var
        .iter_mut()
        .for_each(|v| *v = 0.5 + rng.unit());
    bn
}

pub mod counting;
pub mod fixture;
pub mod seed;

/// What [`sgd_bits`] records after each step's loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    /// Nothing more.
    Loss,
    /// Every parameter's gradient.
    Grads,
    /// Every parameter's gradient and every buffer (running statistics).
    GradsAndBuffers,
}

/// On a pool of `threads` threads: the network `make` builds, `steps` training steps on
/// `data(step)` (a batch and its labels) each followed by a plain SGD update (learning rate
/// 0.05), recording each step's loss bits and what `record` names, then what `finish` adds
/// (inference, on a batch it asks `data` for). What the thread-count tests compare.
pub fn sgd_bits<D>(
    threads: usize,
    make: impl FnOnce() -> cnnc_runtime::exec::Network + Send,
    steps: usize,
    mut data: D,
    record: Record,
    finish: impl FnOnce(&mut cnnc_runtime::exec::Network, &mut D, &mut Vec<u32>) + Send,
) -> Vec<u32>
where
    D: FnMut(usize) -> (ndarray::Array4<f32>, Vec<usize>) + Send,
{
    use cnnc_runtime::Visit;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut net = make();
        let mut bits = Vec::new();
        for step in 0..steps {
            let (x, labels) = data(step);
            bits.push(net.train_step(x.view(), &labels).unwrap().to_bits());
            net.visit(&mut |e| match e {
                Entry::Param { param, .. } => {
                    if record != Record::Loss {
                        bits.extend(param.grad.iter().map(|v| v.to_bits()));
                    }
                    param.value.zip_mut_with(&param.grad, |v, g| *v -= 0.05 * g);
                }
                Entry::Buffer { value, .. } if record == Record::GradsAndBuffers => {
                    bits.extend(value.iter().map(|v| v.to_bits()));
                }
                _ => {}
            });
        }
        finish(&mut net, &mut data, &mut bits);
        bits
    })
}

/// The bits of two training steps of the network `def` on `threads` threads ([`sgd_bits`]:
/// each step's loss, then every parameter gradient). Random `[batch, C, H, W]` inputs of
/// `input` per sample and labels cycling through `classes`.
pub fn train_bits(
    def: &cnnc_runtime::config::NetworkDef,
    input: [usize; 3],
    classes: usize,
    threads: usize,
    batch: usize,
) -> Vec<u32> {
    let [c, h, w] = input;
    let data = |step: usize| {
        let mut rng = Rand(step as u64);
        let x =
            ndarray::Array4::from_shape_vec((batch, c, h, w), rng.vec(batch * c * h * w)).unwrap();
        let labels: Vec<usize> = (0..batch).map(|i| (i * 3 + step) % classes).collect();
        (x, labels)
    };
    let make = || cnnc_runtime::exec::Network::new(def, 5).unwrap();
    sgd_bits(threads, make, 2, data, Record::Grads, |_, _, _| {})
}

/// Bit patterns, so that NaN compares equal to itself and -0.0 differs from 0.0.
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Every parameter gradient of `layer`, in visit order, as bit patterns.
pub fn grad_bits(layer: &mut dyn Layer) -> Vec<Vec<u32>> {
    struct One<'a>(&'a mut dyn Layer);
    impl Visit for One<'_> {
        fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
            self.0.visit(f);
        }
    }
    let mut out = Vec::new();
    One(layer).visit(&mut |e| {
        if let Entry::Param { param, .. } = e {
            out.push(bits(param.grad.as_slice().unwrap_or_default()));
        }
    });
    out
}

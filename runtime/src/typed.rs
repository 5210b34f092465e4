//! Statically shaped activations for generated models (`cnn_model!`): thin wrappers over the
//! runtime's flat buffers that carry the per-sample shape as const generics, so feeding a model a
//! batch of the wrong shape fails to compile. The batch size stays a runtime value. The heavy
//! kernels stay in [`crate::layers`] and take sizes as values; nothing here is monomorphised beyond
//! a few lines per activation type.

use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::{Array2, Array4, ArrayView2, ArrayView4};

use cnnc_core::Shape;

use crate::error::{Error, Result};
use crate::layers::{BatchNorm2d, Conv2d, Layer, Merge};
use crate::loss::softmax_cross_entropy;
use crate::tensor::{Mode, internal_to_nchw, nchw_to_internal};

/// A batch of images `[N, C, H, W]` whose per-sample shape `[C, H, W]` is part of the type.
///
/// Stored pixel-major (the runtime's internal layout, `[N, H, W, C]`, see [`crate::tensor`]); `S`
/// is the storage: `Vec<f32>` for an owned batch, `&[f32]` for a view into a model's buffers.
/// Every constructor over raw memory names the layout it reads: [`Images::from_nchw`] and
/// [`Images::from_nchw_slice`] take PyTorch's (and the data loader's) `[N, C, H, W]` and copy;
/// [`Images::view_nhwc`] views a buffer already in the runtime's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Images<const C: usize, const H: usize, const W: usize, S = Vec<f32>> {
    data: S,
    batch: usize,
}

/// A batch of feature vectors `[N, F]` whose per-sample size `F` is part of the type (logits, or
/// the output of `flatten`).
#[derive(Clone, Debug, PartialEq)]
pub struct Features<const F: usize, S = Vec<f32>> {
    data: S,
    batch: usize,
}

/// Values needed for `batch` samples of `dims`, or a shape error if that overflows.
fn batch_len(dims: Shape, batch: usize, op: &'static str) -> Result<usize> {
    dims.numel().checked_mul(batch).ok_or_else(|| Error::Shape {
        layer: "typed".to_owned(),
        op,
        expected: format!("a batch of {dims} that fits in memory"),
        found: format!("batch {batch}"),
    })
}

/// Checks that `data` holds at least `batch` samples of `dims`; returns the used length.
fn check_view(dims: Shape, data: &[f32], batch: usize) -> Result<usize> {
    let need = batch_len(dims, batch, "view")?;
    if data.len() < need {
        return Err(Error::BufferLength {
            found: data.len(),
            need,
            batch,
            shape: dims.to_string(),
        });
    }
    Ok(need)
}

/// Index of the first NaN or infinite value of `values`. The common case, all finite, is one
/// branch-free pass.
fn first_non_finite(values: &[f32]) -> Option<usize> {
    if values.iter().fold(true, |finite, v| finite & v.is_finite()) {
        return None;
    }
    values.iter().position(|v| !v.is_finite())
}

/// Refuses a batch holding a NaN or an infinity, naming the sample and the `[c, h, w]` position of
/// the first one. `at` turns a position in `values` into `(sample, [c, h, w])` for its layout.
fn check_finite(values: &[f32], at: impl Fn(usize) -> (usize, [usize; 3])) -> Result<()> {
    match first_non_finite(values) {
        None => Ok(()),
        Some(i) => {
            let (sample, [channel, row, column]) = at(i);
            Err(Error::NonFiniteInput {
                sample,
                channel,
                row,
                column,
                value: values[i],
            })
        }
    }
}

/// Where the `i`-th value of an `[N, C, H, W]` buffer lies.
fn nchw_position(i: usize, [c, h, w]: [usize; 3]) -> (usize, [usize; 3]) {
    let per = (c * h * w).max(1);
    let (sample, rest) = (i / per, i % per);
    (
        sample,
        [
            rest / (h * w).max(1),
            rest / w.max(1) % h.max(1),
            rest % w.max(1),
        ],
    )
}

/// Where the `i`-th value of an `[N, H, W, C]` (pixel-major) buffer lies.
fn nhwc_position(i: usize, [c, h, w]: [usize; 3]) -> (usize, [usize; 3]) {
    let per = (c * h * w).max(1);
    let (sample, rest) = (i / per, i % per);
    let pixel = rest / c.max(1);
    (
        sample,
        [rest % c.max(1), pixel / w.max(1), pixel % w.max(1)],
    )
}

/// Checks that a PyTorch-layout batch is `[N, C, H, W]` with `[C, H, W]` = `expected` and holds
/// no NaN or infinity; the errors name the shapes, or the sample and position of the first
/// non-finite value. What every model's `predict` checks first.
pub fn check_input(x: &ArrayView4<f32>, expected: [usize; 3]) -> Result<()> {
    let (_, c, h, w) = x.dim();
    if [c, h, w] != expected {
        return Err(Error::InputShape {
            expected,
            found: x.shape().to_vec(),
        });
    }
    match x.as_slice() {
        Some(values) => check_finite(values, |i| nchw_position(i, expected)),
        None => match x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            None => Ok(()),
            Some(((sample, channel, row, column), &value)) => Err(Error::NonFiniteInput {
                sample,
                channel,
                row,
                column,
                value,
            }),
        },
    }
}

impl<const C: usize, const H: usize, const W: usize, S> Images<C, H, W, S> {
    /// Per-sample shape `[C, H, W]`.
    pub const SHAPE: [usize; 3] = [C, H, W];
    /// Per-sample shape as the layers see it.
    pub const DIMS: Shape = Shape::Chw([C, H, W]);

    /// Number of samples.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

impl<const C: usize, const H: usize, const W: usize> Images<C, H, W> {
    /// Checks that a PyTorch-layout batch is `[N, C, H, W]` for this type's `C`, `H`, `W` and
    /// holds no NaN or infinity; the errors name the shapes, or the sample and position of the
    /// first non-finite value.
    pub fn check_nchw(x: &ArrayView4<f32>) -> Result<()> {
        check_input(x, [C, H, W])
    }

    /// A batch of `batch` all-zero images.
    pub fn zeros(batch: usize) -> Result<Self> {
        let len = batch_len(Self::DIMS, batch, "zeros")?;
        Ok(Images {
            data: vec![0.0; len],
            batch,
        })
    }

    /// Copies a PyTorch-layout batch `[N, C, H, W]`, checking its dimensions once.
    pub fn from_nchw(x: ArrayView4<f32>) -> Result<Self> {
        let mut images = Images {
            data: Vec::new(),
            batch: 0,
        };
        images.copy_from_nchw(x)?;
        Ok(images)
    }

    /// Overwrites this batch with `x` (`[N, C, H, W]`), reusing the allocation when it is large
    /// enough.
    pub fn copy_from_nchw(&mut self, x: ArrayView4<f32>) -> Result<()> {
        Self::check_nchw(&x)?;
        let batch = x.dim().0;
        let len = batch_len(Self::DIMS, batch, "copy_from_nchw")?;
        self.data.resize(len, 0.0);
        nchw_to_internal(x, &mut self.data);
        self.batch = batch;
        Ok(())
    }

    /// Copies the first `batch` images of a flat buffer in PyTorch's layout, `[N, C, H, W]`
    /// row-major: what `cnnc::data::Loader::next_batch` writes, so a loader's buffer feeds a
    /// model directly. Longer buffers are fine (the loader's last batch of an epoch is smaller);
    /// a shorter one is an error naming both lengths, and a NaN or infinite value an error naming
    /// its sample and `[c, h, w]` position.
    ///
    /// ```
    /// use cnnc_runtime::typed::Images;
    ///
    /// // Two 2x1x2 images, NCHW: image 0 is channel 0 = [1, 2], channel 1 = [3, 4].
    /// let nchw = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    /// let images = Images::<2, 1, 2>::from_nchw_slice(&nchw, 2)?;
    /// assert_eq!(images.to_nchw().as_slice(), Some(&nchw[..]));
    /// // The runtime keeps the channels of a pixel together.
    /// assert_eq!(images.as_slice(), &[1.0, 3.0, 2.0, 4.0, 5.0, 7.0, 6.0, 8.0]);
    /// assert!(Images::<2, 1, 2>::from_nchw_slice(&nchw, 3).is_err());
    /// # Ok::<(), cnnc_runtime::Error>(())
    /// ```
    pub fn from_nchw_slice(data: &[f32], batch: usize) -> Result<Self> {
        let mut images = Images {
            data: Vec::new(),
            batch: 0,
        };
        images.copy_from_nchw_slice(data, batch)?;
        Ok(images)
    }

    /// Overwrites this batch with the first `batch` images of a flat `[N, C, H, W]` buffer (see
    /// [`Images::from_nchw_slice`]), reusing the allocation when it is large enough.
    pub fn copy_from_nchw_slice(&mut self, data: &[f32], batch: usize) -> Result<()> {
        let len = check_view(Self::DIMS, data, batch)?;
        let x = ArrayView4::from_shape((batch, C, H, W), &data[..len])
            .map_err(|e| Error::State(format!("an [N, C, H, W] view of {len} values: {e}")))?;
        self.copy_from_nchw(x)
    }
}

impl<'a, const C: usize, const H: usize, const W: usize> Images<C, H, W, &'a [f32]> {
    /// Views the first `batch` samples of a buffer in the runtime's own layout, pixel-major
    /// `[N, H, W, C]` (what [`Images::as_slice`] returns), without copying; longer buffers are
    /// fine. Not for PyTorch's or the data loader's `[N, C, H, W]`: that is
    /// [`Images::from_nchw_slice`]. A NaN or infinite value is an error naming its sample and
    /// `[c, h, w]` position.
    pub fn view_nhwc(data: &'a [f32], batch: usize) -> Result<Self> {
        let images = Self::view_buffer(data, batch)?;
        check_finite(images.data, |i| nhwc_position(i, [C, H, W]))?;
        Ok(images)
    }

    /// [`Images::view_nhwc`] without the look at the values, for a model's own buffers.
    fn view_buffer(data: &'a [f32], batch: usize) -> Result<Self> {
        let len = check_view(Self::DIMS, data, batch)?;
        Ok(Images {
            data: &data[..len],
            batch,
        })
    }
}

impl<const C: usize, const H: usize, const W: usize, S: AsRef<[f32]>> Images<C, H, W, S> {
    /// The batch's values in the runtime's layout, pixel-major (`[N, H, W, C]` in memory);
    /// [`Images::to_nchw`] gives PyTorch's.
    pub fn as_slice(&self) -> &[f32] {
        let len = C * H * W * self.batch;
        &self.data.as_ref()[..len]
    }

    /// A borrowed view of this batch.
    pub fn view(&self) -> Images<C, H, W, &[f32]> {
        Images {
            data: self.as_slice(),
            batch: self.batch,
        }
    }

    /// A PyTorch-layout copy, `[N, C, H, W]`.
    pub fn to_nchw(&self) -> Array4<f32> {
        internal_to_nchw(self.as_slice(), Self::DIMS, self.batch)
    }
}

impl<const F: usize, S> Features<F, S> {
    /// Features per sample.
    pub const SIZE: usize = F;
    /// Per-sample shape as the layers see it.
    pub const DIMS: Shape = Shape::Flat(F);

    /// Number of samples.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

impl<const F: usize> Features<F> {
    /// A batch of `batch` all-zero vectors.
    pub fn zeros(batch: usize) -> Result<Self> {
        let len = batch_len(Self::DIMS, batch, "zeros")?;
        Ok(Features {
            data: vec![0.0; len],
            batch,
        })
    }

    /// Copies a `[N, F]` array, checking its dimensions once.
    pub fn from_array(x: ArrayView2<f32>) -> Result<Self> {
        let (batch, features) = x.dim();
        if features != F {
            return Err(Error::Shape {
                layer: "input".to_owned(),
                op: "typed features",
                expected: format!("[N, {F}]"),
                found: format!("{:?}", x.shape()),
            });
        }
        Ok(Features {
            data: x.iter().copied().collect(),
            batch,
        })
    }
}

impl<'a, const F: usize> Features<F, &'a [f32]> {
    /// Views the first `batch` rows of a `[N, F]` row-major buffer (longer buffers are fine).
    pub fn from_slice(data: &'a [f32], batch: usize) -> Result<Self> {
        let len = check_view(Self::DIMS, data, batch)?;
        Ok(Features {
            data: &data[..len],
            batch,
        })
    }
}

impl<const F: usize, S: AsRef<[f32]>> Features<F, S> {
    /// The batch's values, row-major `[N, F]`.
    pub fn as_slice(&self) -> &[f32] {
        &self.data.as_ref()[..F * self.batch]
    }

    /// A borrowed view of this batch.
    pub fn view(&self) -> Features<F, &[f32]> {
        Features {
            data: self.as_slice(),
            batch: self.batch,
        }
    }

    /// The batch as an `[N, F]` array view (no copy: the layout already is PyTorch's).
    pub fn as_array(&self) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.batch, F), self.as_slice())
            .expect("a features batch holds exactly batch * F values (checked when it was built)")
    }

    /// An owned `[N, F]` copy.
    pub fn to_array(&self) -> Array2<f32> {
        self.as_array().to_owned()
    }
}

/// A typed activation borrowed from a buffer: [`Images`] or [`Features`] over `&[f32]`.
pub trait Activation<'a>: Sized {
    /// Per-sample shape.
    const DIMS: Shape;

    /// Views the first `batch` samples of `data`, a buffer in the runtime's layout (pixel-major
    /// for images).
    fn from_buffer(data: &'a [f32], batch: usize) -> Result<Self>;

    /// The batch's values.
    fn values(&self) -> &'a [f32];

    /// Number of samples.
    fn samples(&self) -> usize;
}

impl<'a, const C: usize, const H: usize, const W: usize> Activation<'a>
    for Images<C, H, W, &'a [f32]>
{
    const DIMS: Shape = Shape::Chw([C, H, W]);

    fn from_buffer(data: &'a [f32], batch: usize) -> Result<Self> {
        Images::view_buffer(data, batch)
    }

    fn values(&self) -> &'a [f32] {
        self.data
    }

    fn samples(&self) -> usize {
        self.batch
    }
}

impl<'a, const F: usize> Activation<'a> for Features<F, &'a [f32]> {
    const DIMS: Shape = Shape::Flat(F);

    fn from_buffer(data: &'a [f32], batch: usize) -> Result<Self> {
        Features::from_slice(data, batch)
    }

    fn values(&self) -> &'a [f32] {
        self.data
    }

    fn samples(&self) -> usize {
        self.batch
    }
}

/// Checks that `layer` was built for activations of types `X` → `Y`.
fn check_layer<'x, 'y, X: Activation<'x>, Y: Activation<'y>>(layer: &dyn Layer) -> Result<()> {
    if layer.input_shape() != X::DIMS || layer.output_shape() != Y::DIMS {
        return Err(Error::Shape {
            layer: layer.name().to_owned(),
            op: "typed layer",
            expected: format!("{} -> {}", X::DIMS, Y::DIMS),
            found: format!("{} -> {}", layer.input_shape(), layer.output_shape()),
        });
    }
    Ok(())
}

/// Runs `layer` forward on `x`, writing its output into `y` (a buffer at least one batch long),
/// and returns the output as a typed view of `y`.
pub fn forward<'x, 'y, X: Activation<'x>, Y: Activation<'y>>(
    layer: &mut dyn Layer,
    x: X,
    y: &'y mut [f32],
    mode: Mode,
) -> Result<Y> {
    check_layer::<X, Y>(layer)?;
    let batch = x.samples();
    layer.forward(x.values(), y, batch, mode)?;
    Y::from_buffer(y, batch)
}

/// Runs `layer` backward for the batch of the latest forward: `x` and `y` are its input and output
/// buffers (read as `X` and `Y`), `dy` the gradient of its output. Writes `dx` when given and every
/// parameter's gradient.
pub fn backward<'a, X: Activation<'a>, Y: Activation<'a>>(
    layer: &mut dyn Layer,
    x: &'a [f32],
    y: &'a [f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    batch: usize,
) -> Result<()> {
    check_layer::<X, Y>(layer)?;
    let (x, y) = (X::from_buffer(x, batch)?, Y::from_buffer(y, batch)?);
    layer.backward(x.values(), y.values(), dy, dx, batch)
}

/// Runs batch norm `norm` forward on `x` together with the residual add after it (the plan's
/// `JoinedAdd`): writes `relu(bn(x) + residual)` (the sum without `relu`) into `y`, the add's
/// output buffer, and returns its typed view; the batch norm's own output is not written. The
/// values of [`forward`] and [`add`] one after the other, bit for bit.
pub fn norm_add<'x, 'y, X, Y>(
    norm: &mut BatchNorm2d,
    [x, residual]: [X; 2],
    y: &'y mut [f32],
    mode: Mode,
    relu: bool,
) -> Result<Y>
where
    X: Activation<'x> + SameShape<Y>,
    Y: Activation<'y>,
{
    check_layer::<X, Y>(norm)?;
    let batch = x.samples();
    norm.forward_add(x.values(), residual.values(), y, batch, mode, relu)?;
    Y::from_buffer(y, batch)
}

/// Runs batch norm `norm` backward together with convolution `conv` before it (the plan's
/// `JoinedNormGrad`): the batch norm's parameter gradients, then the convolution's backward,
/// which computes the batch norm's input gradient as it stages it. `[x, y]` are the
/// convolution's input and output buffers (read as `X` and `Y`; `y` is the batch norm's
/// input), `norm_y` the batch norm's output and `dy` its gradient; writes the convolution's
/// input gradient into `dx` when given. The values of [`backward`] for each, bit for bit,
/// without writing the batch norm's input gradient.
pub fn norm_conv_backward<'a, X: Activation<'a>, Y: Activation<'a>>(
    norm: &mut BatchNorm2d,
    conv: &mut Conv2d,
    [x, y]: [&'a [f32]; 2],
    norm_y: &'a [f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    batch: usize,
) -> Result<()> {
    check_layer::<X, Y>(conv)?;
    check_layer::<Y, Y>(norm)?;
    let (x, y) = (X::from_buffer(x, batch)?, Y::from_buffer(y, batch)?);
    let norm_y = Y::from_buffer(norm_y, batch)?;
    let grad = norm.backward_deferred(y.values(), norm_y.values(), dy, batch)?;
    conv.backward_from_norm(x.values(), y.values(), &grad, dx, batch)
}

/// Evaluation-mode inference from `&self` on a typed batch: the logits as owned features. What a
/// generated model's `infer` calls (see [`crate::model::infer_internal`]).
pub fn infer<M, const C: usize, const H: usize, const W: usize, S, const F: usize>(
    model: &M,
    x: &Images<C, H, W, S>,
) -> Result<Features<F>>
where
    M: crate::model::Planned + ?Sized,
    S: AsRef<[f32]>,
{
    let logits = crate::model::infer_internal(model, x.as_slice(), x.batch())?;
    let batch = logits.nrows();
    if logits.ncols() != F {
        return Err(Error::State(format!(
            "cnnc bug: the model gives {} outputs, its type says {F}",
            logits.ncols()
        )));
    }
    Ok(Features {
        data: logits.into_raw_vec_and_offset().0,
        batch,
    })
}

/// Marks the latest training forward of a model; its `backward` takes it back, so a backward
/// always follows the forward it belongs to (the model checks that no other forward ran since).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "pass the tape to `backward`"]
pub struct Tape {
    pass: u64,
    batch: usize,
}

impl Tape {
    /// Number of samples of the forward pass.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

/// Source of unique pass numbers: unique across every model, so a tape never matches a pass of
/// another model either.
static PASSES: AtomicU64 = AtomicU64::new(1);

/// The buffers a generated model owns: the `N` activation buffers of its plan
/// ([`cnnc_core::Plan::buffers`]: `acts[0]` the input, then each step's output), the `G`
/// gradient buffers of its plan ([`cnnc_core::Plan::grad_buffers`]; a sequential model's two are
/// used in turn by backward), and the logits' gradient.
/// Sized for the largest batch seen and then reused, so a training step allocates nothing.
#[derive(Clone, Debug)]
pub struct Workspace<const N: usize, const G: usize = 2> {
    /// Activations, pixel-major, each holding [`Workspace::capacity`] samples.
    pub acts: [Vec<f32>; N],
    /// Gradient buffers, each as large as the largest activation.
    pub grads: [Vec<f32>; G],
    /// Gradient of the loss with respect to the logits, `[batch, outputs]`.
    pub dlogits: Vec<f32>,
    lens: [usize; N],
    capacity: usize,
    /// Pass number, batch and mode of the latest forward.
    last: Option<(u64, usize, Mode)>,
}

impl<const N: usize, const G: usize> Workspace<N, G> {
    /// Empty buffers for a model whose activations hold `lens[i]` values per sample (`lens[0]`
    /// the input, the last the outputs).
    pub fn new(lens: [usize; N]) -> Self {
        Workspace {
            acts: std::array::from_fn(|_| Vec::new()),
            grads: std::array::from_fn(|_| Vec::new()),
            dlogits: Vec::new(),
            lens,
            capacity: 0,
            last: None,
        }
    }

    /// Largest batch the buffers hold without growing.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Grows every buffer to hold `batch` samples (no-op when they already do).
    pub fn reserve(&mut self, batch: usize) -> Result<()> {
        if batch <= self.capacity {
            return Ok(());
        }
        let sized = |len: usize| {
            len.checked_mul(batch)
                .ok_or_else(|| Error::State(format!("a batch of {batch} does not fit in memory")))
        };
        for (act, &len) in self.acts.iter_mut().zip(&self.lens) {
            act.resize(sized(len)?, 0.0);
        }
        let largest = sized(self.lens.iter().copied().max().unwrap_or(0))?;
        for g in &mut self.grads {
            g.resize(largest, 0.0);
        }
        self.dlogits.resize(sized(self.lens[N - 1])?, 0.0);
        self.capacity = batch;
        Ok(())
    }

    /// Copies `batch` input samples (pixel-major) into `acts[0]`, growing the buffers as needed,
    /// and forgets the previous pass.
    pub fn load_input(&mut self, x: &[f32], batch: usize) -> Result<()> {
        let len = self.lens[0].saturating_mul(batch);
        if x.len() < len {
            return Err(Error::Shape {
                layer: "network".to_owned(),
                op: "forward input",
                expected: format!("{len} values (batch {batch} x {})", self.lens[0]),
                found: format!("{} values", x.len()),
            });
        }
        self.reserve(batch)?;
        self.last = None;
        self.acts[0][..len].copy_from_slice(&x[..len]);
        Ok(())
    }

    /// Copies an NCHW batch into `acts[0]` (its dims already checked by the caller), growing the
    /// buffers as needed, and forgets the previous pass.
    pub fn load_nchw(&mut self, x: ArrayView4<f32>) -> Result<()> {
        self.reserve(x.dim().0)?;
        self.last = None;
        nchw_to_internal(x, &mut self.acts[0]);
        Ok(())
    }

    /// Records a completed forward pass of `batch` samples in `mode`; returns its tape.
    pub fn finish_forward(&mut self, batch: usize, mode: Mode) -> Tape {
        let pass = PASSES.fetch_add(1, Ordering::Relaxed);
        self.last = Some((pass, batch, mode));
        Tape { pass, batch }
    }

    /// The batch of the training forward `tape` belongs to, or an error if another forward ran
    /// since (or it came from another model).
    pub fn check_tape(&self, tape: &Tape) -> Result<usize> {
        match self.last {
            Some((pass, batch, Mode::Train)) if pass == tape.pass => Ok(batch),
            _ => Err(Error::State(
                "backward needs the tape of this model's latest training forward".to_owned(),
            )),
        }
    }

    /// A tape for the latest forward when it was a training one (for `Model::backward`, which
    /// takes no tape), or an error saying a training forward must come first.
    pub fn last_training_tape(&self) -> Result<Tape> {
        match self.last {
            Some((pass, batch, Mode::Train)) => Ok(Tape { pass, batch }),
            _ => Err(Error::State(
                "backward needs a training forward (`forward_train`) first".to_owned(),
            )),
        }
    }

    /// The outputs of the latest forward of `batch` samples, `[batch, F]`.
    pub fn outputs<const F: usize>(&self, batch: usize) -> Result<Features<F, &[f32]>> {
        Features::from_slice(&self.acts[N - 1], batch)
    }

    /// Copies `dlogits` (`[batch, F]`, the gradient of the loss with respect to the outputs) into
    /// the model's gradient buffer.
    pub fn load_dlogits<const F: usize>(&mut self, dlogits: &[f32], batch: usize) -> Result<()> {
        let len = F * batch;
        if dlogits.len() != len {
            return Err(Error::Shape {
                layer: "network".to_owned(),
                op: "backward dlogits",
                expected: format!("[{batch}, {F}]"),
                found: format!("{} values", dlogits.len()),
            });
        }
        self.dlogits[..len].copy_from_slice(dlogits);
        Ok(())
    }

    /// Softmax cross-entropy (mean) of the latest forward's `[batch, F]` outputs against `labels`;
    /// writes its gradient into the model's gradient buffer and returns the loss.
    pub fn cross_entropy<const F: usize>(&mut self, labels: &[usize], batch: usize) -> Result<f32> {
        let len = F * batch;
        let shape_err = |e: ndarray::ShapeError| Error::State(format!("logits buffer: {e}"));
        let logits =
            ArrayView2::from_shape((batch, F), &self.acts[N - 1][..len]).map_err(shape_err)?;
        let dlogits = ndarray::ArrayViewMut2::from_shape((batch, F), &mut self.dlogits[..len])
            .map_err(shape_err)?;
        softmax_cross_entropy(logits, labels, dlogits)
    }
}

/// Unwraps a layer built by a generated model's constructor. The macro checked the spec with the
/// same rules the layer constructors apply, so an error here is a bug in cnnc, not in the spec.
///
/// # Panics
///
/// When `built` is an error.
pub fn expect_built<T>(built: Result<T>) -> T {
    match built {
        Ok(layer) => layer,
        Err(err) => panic!("cnnc bug: a layer of a checked spec failed to build: {err}"),
    }
}

/// Marks typed activations of the same per-sample shape (whatever buffers they borrow): what
/// [`add`] requires of its inputs and output.
pub trait SameShape<Y> {}

impl<const C: usize, const H: usize, const W: usize> SameShape<Images<C, H, W, &[f32]>>
    for Images<C, H, W, &[f32]>
{
}

impl<const F: usize> SameShape<Features<F, &[f32]>> for Features<F, &[f32]> {}

/// Marks typed activations of per-sample shape `[C, H, W]`, a flat `[F]` counting as
/// `[F, 1, 1]` (its layout is the same): what [`mul`] requires of its output.
pub trait Shaped<const C: usize, const H: usize, const W: usize> {}

impl<const C: usize, const H: usize, const W: usize, S> Shaped<C, H, W> for Images<C, H, W, S> {}

impl<const F: usize, S> Shaped<F, 1, 1> for Features<F, S> {}

/// Marks typed activations whose samples are `H x W` maps of any channel count, a flat batch
/// counting as `1 x 1`: what [`concat`] requires of its output.
pub trait Plane<const H: usize, const W: usize> {}

impl<const C: usize, const H: usize, const W: usize, S> Plane<H, W> for Images<C, H, W, S> {}

impl<const F: usize, S> Plane<1, 1> for Features<F, S> {}

/// A batch of `H x W` maps whose channel count is a run-time value: an input of [`concat`],
/// which joins inputs of different channel counts but one `H x W`. Built by
/// [`Images::any_channels`] (a flat batch, [`Features::any_channels`], is `1 x 1`), so that
/// joining maps of different sizes does not compile: they would not share one array type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnyChannels<'a, const H: usize, const W: usize> {
    data: &'a [f32],
    shape: Shape,
    batch: usize,
}

/// A batch read as if it had per-sample shape `[C, H, W]`, its size-1 dimensions repeated as
/// PyTorch broadcasts them: an input of [`mul`]. Built by [`Images::as_broadcast`] (the shape
/// itself), [`Images::expand_hw`] (a `[C, 1, 1]` gate over `H x W`; only such a view has the
/// method, so a gate of the wrong shape does not compile) or the checked [`Images::expand`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Broadcast<'a, const C: usize, const H: usize, const W: usize> {
    data: &'a [f32],
    shape: Shape,
    batch: usize,
}

/// Whether `from` broadcasts to `to` as PyTorch does: each dimension equal or 1, same rank.
fn broadcasts(from: Shape, to: Shape) -> bool {
    let (from, to) = (from.dims(), to.dims());
    from.len() == to.len() && from.iter().zip(&to).all(|(&a, &b)| a == b || a == 1)
}

/// A view of `data` as a `mul` input of shape `to`, when `from` broadcasts to it.
fn broadcast<'a, const C: usize, const H: usize, const W: usize>(
    data: &'a [f32],
    from: Shape,
    to: Shape,
    batch: usize,
) -> Result<Broadcast<'a, C, H, W>> {
    if !broadcasts(from, to) {
        return Err(Error::Shape {
            layer: "typed".to_owned(),
            op: "broadcast",
            expected: format!("a shape that broadcasts to {to}"),
            found: from.to_string(),
        });
    }
    Ok(Broadcast {
        data,
        shape: from,
        batch,
    })
}

impl<'a, const C: usize, const H: usize, const W: usize> Images<C, H, W, &'a [f32]> {
    /// This batch as a [`concat`] input: its `H x W` typed, its channels a value.
    pub fn any_channels(self) -> AnyChannels<'a, H, W> {
        AnyChannels {
            data: self.data,
            shape: Self::DIMS,
            batch: self.batch,
        }
    }

    /// This batch as a [`mul`] input of its own shape.
    pub fn as_broadcast(self) -> Broadcast<'a, C, H, W> {
        Broadcast {
            data: self.data,
            shape: Self::DIMS,
            batch: self.batch,
        }
    }

    /// This batch as a [`mul`] input of shape `[C2, H2, W2]`: every dimension of this shape is
    /// that one's or 1 (checked here).
    pub fn expand<const C2: usize, const H2: usize, const W2: usize>(
        self,
    ) -> Result<Broadcast<'a, C2, H2, W2>> {
        let to = Shape::Chw([C2, H2, W2]);
        broadcast(self.data, Self::DIMS, to, self.batch)
    }
}

impl<'a, const C: usize> Images<C, 1, 1, &'a [f32]> {
    /// This `[C, 1, 1]` batch (a squeeze-and-excitation gate) as a [`mul`] input spread over
    /// `H x W`.
    pub fn expand_hw<const H: usize, const W: usize>(self) -> Broadcast<'a, C, H, W> {
        Broadcast {
            data: self.data,
            shape: Self::DIMS,
            batch: self.batch,
        }
    }
}

impl<'a, const F: usize> Features<F, &'a [f32]> {
    /// This flat batch as a [`concat`] input (features join as `1 x 1` maps' channels do).
    pub fn any_channels(self) -> AnyChannels<'a, 1, 1> {
        AnyChannels {
            data: self.data,
            shape: Self::DIMS,
            batch: self.batch,
        }
    }

    /// This batch as a [`mul`] input of its own shape.
    pub fn as_broadcast(self) -> Broadcast<'a, F, 1, 1> {
        Broadcast {
            data: self.data,
            shape: Self::DIMS,
            batch: self.batch,
        }
    }

    /// This batch as a [`mul`] input of `F2` features: `F` is `F2` or 1 (checked here).
    pub fn expand<const F2: usize>(self) -> Result<Broadcast<'a, F2, 1, 1>> {
        broadcast(self.data, Self::DIMS, Shape::Flat(F2), self.batch)
    }
}

/// Where a merge layer's backward puts the gradient of one of its inputs (the plan's `GradTo`,
/// with the buffer borrowed).
#[derive(Debug)]
pub enum GradOut<'a> {
    /// Overwrites the buffer: the first part of the input's gradient.
    Write(&'a mut [f32]),
    /// Adds to the buffer, which holds the parts of the input's later readers already.
    Add(&'a mut [f32]),
}

/// Checks that merge layer `layer` was built for inputs of `shapes` and output `Y`.
fn check_merge<'y, Y: Activation<'y>>(layer: &dyn Merge, shapes: &[Shape]) -> Result<()> {
    let output = Y::DIMS;
    if layer.input_shapes() != shapes || layer.output_shape() != output {
        let list = |shapes: &[Shape]| {
            shapes
                .iter()
                .map(Shape::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::Shape {
            layer: layer.name().to_owned(),
            op: "typed merge",
            expected: format!("{} -> {output}", list(shapes)),
            found: format!("{} -> {}", list(layer.input_shapes()), layer.output_shape()),
        });
    }
    Ok(())
}

/// Runs merge layer `layer` on `values` (`batch` samples of each input, of `shapes`), writing
/// `y`, and returns the output's typed view.
fn merge_forward<'y, Y: Activation<'y>, const K: usize>(
    layer: &mut dyn Merge,
    values: [&[f32]; K],
    shapes: [Shape; K],
    batch: usize,
    y: &'y mut [f32],
) -> Result<Y> {
    check_merge::<Y>(layer, &shapes)?;
    layer.forward_merge(&values, y, batch)?;
    Y::from_buffer(y, batch)
}

/// Runs `add` (`torch.add`, `a + b + ...`) on `xs`, inputs of one shape (one array type, so
/// different shapes do not compile), writing the output into `y` and returning its typed view.
pub fn add<'x, 'y, X, Y, const K: usize>(
    layer: &mut dyn Merge,
    xs: [X; K],
    y: &'y mut [f32],
) -> Result<Y>
where
    X: Activation<'x> + SameShape<Y>,
    Y: Activation<'y>,
{
    let batch = xs.first().map_or(0, Activation::samples);
    let values = xs.each_ref().map(Activation::values);
    merge_forward(layer, values, [X::DIMS; K], batch, y)
}

/// Runs `concat` (`torch.cat(dim=1)`) on `xs`, maps of one `H x W` (one array type, so
/// different sizes do not compile), writing the output into `y` and returning its typed view.
pub fn concat<'y, Y, const H: usize, const W: usize, const K: usize>(
    layer: &mut dyn Merge,
    xs: [AnyChannels<'_, H, W>; K],
    y: &'y mut [f32],
) -> Result<Y>
where
    Y: Activation<'y> + Plane<H, W>,
{
    let batch = xs.first().map_or(0, |x| x.batch);
    merge_forward(layer, xs.map(|x| x.data), xs.map(|x| x.shape), batch, y)
}

/// Runs `mul` (`torch.mul`, `a * b`, broadcast as PyTorch does) on `xs`, both read as the
/// output's shape `[C, H, W]`, writing the output into `y` and returning its typed view.
pub fn mul<'y, Y, const C: usize, const H: usize, const W: usize>(
    layer: &mut dyn Merge,
    xs: [Broadcast<'_, C, H, W>; 2],
    y: &'y mut [f32],
) -> Result<Y>
where
    Y: Activation<'y> + Shaped<C, H, W>,
{
    let batch = xs[0].batch;
    merge_forward(layer, xs.map(|x| x.data), xs.map(|x| x.shape), batch, y)
}

/// Runs merge layer `layer` backward to input `input` for the batch of the latest forward:
/// `xs` are its input buffers, `[y, dy]` its output buffer (which an add masks its gradient by,
/// when it applies the ReLU after it) and the gradient of its output (read as `Y`); writes or
/// adds the input's gradient as `dx` says.
pub fn merge_backward<'y, Y: Activation<'y>, const K: usize>(
    layer: &mut dyn Merge,
    xs: [&[f32]; K],
    [y, dy]: [&'y [f32]; 2],
    input: usize,
    dx: GradOut<'_>,
    batch: usize,
) -> Result<()> {
    let dy = Y::from_buffer(dy, batch)?;
    let (dx, add) = match dx {
        GradOut::Write(dx) => (dx, false),
        GradOut::Add(dx) => (dx, true),
    };
    layer.backward_merge(&xs, [y, dy.values()], input, dx, add, batch)
}

/// Adds `part`, one reader's part of the gradient of a tensor of `batch` samples of `X`, into
/// `into`, which holds the parts of its later readers: how a tensor several layers read gets
/// its gradient, in the plan's order (as the executor adds them).
pub fn accumulate<'a, X: Activation<'a>>(
    into: &mut [f32],
    part: &[f32],
    batch: usize,
) -> Result<()> {
    let len = batch_len(X::DIMS, batch, "accumulate")?;
    if into.len() < len || part.len() < len {
        return Err(Error::Shape {
            layer: "typed".to_owned(),
            op: "accumulate",
            expected: format!("{len} values (batch {batch} x {})", X::DIMS),
            found: format!("{} and {} values", into.len(), part.len()),
        });
    }
    into[..len]
        .iter_mut()
        .zip(&part[..len])
        .for_each(|(sum, part)| *sum += part);
    Ok(())
}

/// Zeroes every parameter gradient of `layer`, a layer whose output reaches nothing: its
/// backward does not run, and no gradient reaches its parameters (as the executor leaves them).
pub fn zero_grads(layer: &mut dyn Layer) {
    layer.visit(&mut |entry| {
        if let crate::param::Entry::Param { param, .. } = entry {
            param.grad.fill(0.0);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pool2dConfig;
    use crate::layers::{MaxPool2d, Relu};

    #[test]
    fn images_round_trip_and_reject_wrong_dims() {
        let x = Array4::from_shape_fn((2, 3, 4, 5), |(n, c, h, w)| {
            (n * 1000 + c * 100 + h * 10 + w) as f32
        });
        let images = Images::<3, 4, 5>::from_nchw(x.view()).unwrap();
        assert_eq!(images.batch(), 2);
        assert_eq!(images.to_nchw(), x);
        let err = Images::<3, 4, 6>::from_nchw(x.view()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the model takes inputs of shape [3, 4, 6] per sample, but this batch has shape \
             [2, 3, 4, 5] (2 samples of [3, 4, 5])"
        );
    }

    #[test]
    fn non_finite_inputs_are_refused_where_they_are() {
        // Sample 1, channel 2, row 0, column 3 of [2, 3, 4, 5], in both layouts.
        let mut x = Array4::<f32>::zeros((2, 3, 4, 5));
        x[[1, 2, 0, 3]] = f32::NAN;
        let err = Images::<3, 4, 5>::from_nchw(x.view()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "input sample 1 holds NaN at [2, 0, 3] (channel, row, column); inputs must be finite \
             numbers"
        );
        let flat = x.as_slice().unwrap();
        assert!(matches!(
            Images::<3, 4, 5>::from_nchw_slice(flat, 2),
            Err(Error::NonFiniteInput {
                sample: 1,
                channel: 2,
                row: 0,
                column: 3,
                ..
            })
        ));
        let mut nhwc = vec![0.0; 2 * 60];
        nchw_to_internal(x.view(), &mut nhwc);
        assert!(matches!(
            Images::<3, 4, 5, &[f32]>::view_nhwc(&nhwc, 2),
            Err(Error::NonFiniteInput {
                sample: 1,
                channel: 2,
                row: 0,
                column: 3,
                ..
            })
        ));
        x[[1, 2, 0, 3]] = f32::NEG_INFINITY;
        let transposed = x.view().reversed_axes();
        let mut t = transposed.to_owned();
        t.swap_axes(0, 3);
        t.swap_axes(1, 2);
        let err = Images::<3, 4, 5>::check_nchw(&t.view()).unwrap_err();
        assert!(err.to_string().contains("holds -inf at [2, 0, 3]"), "{err}");
    }

    #[test]
    fn views_check_lengths_and_use_only_the_prefix() {
        let buf = vec![1.0; 10];
        let f = Features::<4, &[f32]>::from_slice(&buf, 2).unwrap();
        assert_eq!(f.as_array().dim(), (2, 4));
        assert!(Features::<4, &[f32]>::from_slice(&buf, 3).is_err());
    }

    #[test]
    fn typed_forward_checks_the_layer_and_types_its_output() {
        let config = Pool2dConfig::new([2, 2], [2, 2], [0, 0]);
        let dims = Shape::Chw([1, 2, 2]);
        let mut pool = MaxPool2d::new("pool", &config, dims).unwrap();
        let x = [1.0, 4.0, 2.0, 3.0];
        let mut y = [0.0; 1];
        let x = Images::<1, 2, 2, &[f32]>::view_nhwc(&x, 1).unwrap();
        let out: Images<1, 1, 1, &[f32]> =
            forward(&mut pool, x.clone(), &mut y, Mode::Eval).unwrap();
        assert_eq!(out.as_slice(), &[4.0]);
        let mut relu = Relu::new("relu", dims);
        let wrong: Result<Images<1, 1, 1, &[f32]>> = forward(&mut relu, x, &mut y, Mode::Eval);
        assert!(matches!(
            wrong,
            Err(Error::Shape {
                op: "typed layer",
                ..
            })
        ));
    }

    #[test]
    fn tapes_only_fit_the_latest_training_pass() {
        let mut ws = Workspace::<2>::new([4, 2]);
        ws.load_input(&[0.0; 8], 2).unwrap();
        let tape = ws.finish_forward(2, Mode::Train);
        assert_eq!(ws.check_tape(&tape).unwrap(), 2);
        let _later = ws.finish_forward(2, Mode::Train);
        assert!(ws.check_tape(&tape).is_err());
        let eval = ws.finish_forward(1, Mode::Eval);
        assert!(ws.check_tape(&eval).is_err());
    }
}

//! The dynamic executor: a runnable model built at run time from a [`NetworkDef`] (what the CLI
//! uses). It is a list of the same [`Layer`] structs generated models hold as fields, plus
//! activation and gradient buffers sized for the largest batch seen and reused afterwards.

use std::time::{Duration, Instant};

use ndarray::{Array2, ArrayView2, ArrayView4, ArrayViewMut2};

use crate::config::{LayerConfig, LayerDef, NetworkDef};
use crate::error::{Error, Result};
use crate::init::{dropout_rng, init_rng};
use crate::layers::{
    self, AvgPool2d, BatchNorm2d, Conv2d, Dropout, Flatten, Layer, LeakyRelu, Linear, MaxPool2d,
    Relu, Sigmoid, Tanh,
};
use crate::loss::softmax_cross_entropy;
use crate::param::{Entry, Visit};
use crate::tensor::{Dims, Mode, nchw_to_internal};

/// A sequential network executed layer by layer. Parameters and buffers are visited (see
/// [`Visit`]) in layer order under their PyTorch state_dict names.
#[derive(Debug)]
pub struct Network {
    input: Dims,
    layers: Vec<Box<dyn Layer>>,
    /// `acts[0]` is the input (internal layout), `acts[i + 1]` the output of layer `i`.
    acts: Vec<Vec<f32>>,
    /// Two gradient buffers, each as large as the largest activation, used in turn by backward.
    grads: [Vec<f32>; 2],
    /// Gradient of the loss with respect to the logits, `[batch, classes]`.
    dlogits: Vec<f32>,
    /// Largest batch the buffers hold.
    capacity: usize,
    /// Batch and mode of the last forward, which backward needs.
    last: Option<(usize, Mode)>,
}

/// Wall time one layer took in a profiled training step ([`Network::profile_train_step`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerTime {
    /// Time in `forward`.
    pub forward: Duration,
    /// Time in `backward`.
    pub backward: Duration,
}

/// Builds one layer of a network for per-sample input `input`; `index` is its position.
fn build_layer(
    def: &LayerDef,
    input: Dims,
    index: usize,
    seed: u64,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Box<dyn Layer>> {
    let name = def.name.as_str();
    Ok(match &def.config {
        LayerConfig::Conv2d(c) => {
            let (channels, h, w) = match input {
                Dims::Image {
                    channels,
                    height,
                    width,
                } => (channels, height, width),
                Dims::Flat { features } => {
                    return Err(Error::config(
                        name,
                        format!(
                            "conv2d needs an image input [channels, height, width], found flat [{features}]"
                        ),
                    ));
                }
            };
            if channels != c.in_channels {
                return Err(Error::config(
                    name,
                    format!(
                        "conv2d expects {} input channels, found {channels}",
                        c.in_channels
                    ),
                ));
            }
            Box::new(Conv2d::new(name, c, [h, w], rng)?)
        }
        LayerConfig::MaxPool2d(c) => Box::new(MaxPool2d::new(name, c, input)?),
        LayerConfig::AvgPool2d(c) => Box::new(AvgPool2d::new(name, c, input)?),
        LayerConfig::Relu => Box::new(Relu::new(name, input)),
        LayerConfig::LeakyRelu { negative_slope } => {
            Box::new(LeakyRelu::new(name, input, *negative_slope))
        }
        LayerConfig::Sigmoid => Box::new(Sigmoid::new(name, input)),
        LayerConfig::Tanh => Box::new(Tanh::new(name, input)),
        LayerConfig::Flatten => Box::new(Flatten::new(name, input)),
        LayerConfig::Linear(c) => Box::new(Linear::new(name, c, input, rng)?),
        LayerConfig::Dropout { p } => {
            Box::new(Dropout::new(name, input, *p, dropout_rng(seed, index))?)
        }
        LayerConfig::BatchNorm2d(c) => Box::new(BatchNorm2d::new(name, c, input)?),
    })
}

impl Network {
    /// Builds and initialises the network described by `def`: parameters drawn in layer order
    /// from [`init_rng`]`(seed)` (PyTorch's default init), dropout masks from
    /// [`dropout_rng`]`(seed, layer index)`. Errors (naming the layer) when sizes do not chain,
    /// an option is invalid, or the output is not a flat `[classes]` vector.
    pub fn new(def: &NetworkDef, seed: u64) -> Result<Self> {
        let [channels, height, width] = def.input;
        if def.input.contains(&0) {
            return Err(Error::config(
                "network",
                format!("input shape {:?} must be positive", def.input),
            ));
        }
        if def.layers.is_empty() {
            return Err(Error::config(
                "network",
                "a network needs at least one layer",
            ));
        }
        let mut rng = init_rng(seed);
        let mut dims = Dims::Image {
            channels,
            height,
            width,
        };
        let mut layers = Vec::with_capacity(def.layers.len());
        for (index, layer) in def.layers.iter().enumerate() {
            let built = build_layer(layer, dims, index, seed, &mut rng)?;
            dims = built.output_dims();
            if dims.is_empty() {
                return Err(Error::config(
                    &layer.name,
                    format!("output {dims} is empty"),
                ));
            }
            layers.push(built);
        }
        if let Dims::Image { .. } = dims {
            return Err(Error::config(
                "network",
                format!(
                    "the output must be flat [classes], found an image {dims}; end with flatten and linear"
                ),
            ));
        }
        let acts = std::iter::once(Vec::new())
            .chain(layers.iter().map(|_| Vec::new()))
            .collect();
        Ok(Network {
            input: Dims::Image {
                channels,
                height,
                width,
            },
            layers,
            acts,
            grads: [Vec::new(), Vec::new()],
            dlogits: Vec::new(),
            capacity: 0,
            last: None,
        })
    }

    /// The layers, in order (for per-layer timing or inspection).
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// Per-sample input shape `[channels, height, width]`.
    pub fn input_shape(&self) -> [usize; 3] {
        match self.input {
            Dims::Image {
                channels,
                height,
                width,
            } => [channels, height, width],
            Dims::Flat { features } => [features, 1, 1],
        }
    }

    /// Where every dropout layer's random stream stands, by layer name (see
    /// [`Layer::rng_state`]): with [`Network::restore_rng_states`], what lets a checkpoint of a
    /// model with dropout continue bit-identically. Empty for a network without dropout.
    pub fn rng_states(&self) -> Vec<(String, u128)> {
        layers::rng_states(self.layers.iter().map(|l| &**l as &dyn Layer))
    }

    /// Moves every dropout layer's random stream to the position [`Network::rng_states`] gave
    /// for it in a network built from the same definition and seed. Errors on names that are not
    /// dropout layers of this network and on dropout layers `states` leaves out, before moving
    /// any stream.
    pub fn restore_rng_states(&mut self, states: &[(String, u128)]) -> Result<()> {
        layers::restore_rng_states(
            self.layers.iter_mut().map(|l| &mut **l as &mut dyn Layer),
            states,
        )
    }

    /// Number of logits per sample.
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.output_dims().len())
    }

    /// Number of trainable scalars (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn param_count(&mut self) -> usize {
        let mut count = 0;
        self.visit(&mut |e| {
            if let Entry::Param { param, .. } = e {
                count += param.value.len();
            }
        });
        count
    }

    /// Sizes every buffer for batches of up to `max_batch` samples, so that later steps with
    /// batches this large or smaller allocate nothing. Forward calls it as needed.
    pub fn reserve(&mut self, max_batch: usize) {
        if max_batch <= self.capacity {
            return;
        }
        self.acts[0].resize(self.input.len() * max_batch, 0.0);
        let mut largest = self.input.len();
        for (act, layer) in self.acts[1..].iter_mut().zip(&self.layers) {
            let len = layer.output_dims().len();
            largest = largest.max(len);
            act.resize(len * max_batch, 0.0);
        }
        for g in &mut self.grads {
            g.resize(largest * max_batch, 0.0);
        }
        self.dlogits.resize(self.classes() * max_batch, 0.0);
        self.capacity = max_batch;
    }

    /// Runs the network on an NCHW batch `[N, C, H, W]` and returns a view of the logits
    /// `[N, classes]`, kept in the network's own buffer (nothing is allocated once the buffers
    /// hold `N` samples). `mode` selects training or inference behaviour.
    pub fn forward_view(&mut self, x: ArrayView4<f32>, mode: Mode) -> Result<ArrayView2<'_, f32>> {
        self.forward_timed(x, mode, None)?;
        self.logits()
    }

    /// Checks and loads the input, runs every layer (timing them into `times` when given) and
    /// records the batch and mode for backward.
    fn forward_timed(
        &mut self,
        x: ArrayView4<f32>,
        mode: Mode,
        times: Option<&mut [LayerTime]>,
    ) -> Result<()> {
        let (batch, c, h, w) = x.dim();
        if [c, h, w] != self.input_shape() {
            return Err(Error::shape(
                "network",
                "forward input",
                format!(
                    "[N, {}, {}, {}]",
                    self.input_shape()[0],
                    self.input_shape()[1],
                    self.input_shape()[2]
                ),
                format!("{:?}", x.shape()),
            ));
        }
        self.reserve(batch);
        self.last = None;
        nchw_to_internal(x, &mut self.acts[0]);
        self.run_layers(batch, mode, times)?;
        self.last = Some((batch, mode));
        Ok(())
    }

    /// Runs every layer forward on `acts[0]`, adding each layer's time to `times` when given.
    fn run_layers(
        &mut self,
        batch: usize,
        mode: Mode,
        mut times: Option<&mut [LayerTime]>,
    ) -> Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let (before, after) = self.acts.split_at_mut(i + 1);
            let start = Instant::now();
            layer.forward(&before[i], &mut after[0], batch, mode)?;
            if let Some(t) = times.as_deref_mut().and_then(|t| t.get_mut(i)) {
                t.forward += start.elapsed();
            }
        }
        Ok(())
    }

    /// Runs the network on an NCHW batch and returns the logits `[N, classes]` as a new array.
    pub fn forward(&mut self, x: ArrayView4<f32>, mode: Mode) -> Result<Array2<f32>> {
        Ok(self.forward_view(x, mode)?.to_owned())
    }

    /// The logits of the last forward, `[N, classes]`.
    pub fn logits(&self) -> Result<ArrayView2<'_, f32>> {
        let (batch, _) = self
            .last
            .ok_or_else(|| Error::State("no forward pass has run yet".to_owned()))?;
        let classes = self.classes();
        let out = self.acts.last().map_or(&[][..], |a| &a[..batch * classes]);
        ArrayView2::from_shape((batch, classes), out)
            .map_err(|e| Error::State(format!("logits buffer: {e}")))
    }

    /// Backpropagates `dlogits` (gradient of the loss with respect to the last forward's logits,
    /// `[N, classes]`) and overwrites every parameter's `grad`.
    pub fn backward(&mut self, dlogits: ArrayView2<f32>) -> Result<()> {
        let (batch, _) = self
            .last
            .ok_or_else(|| Error::State("backward needs a forward pass first".to_owned()))?;
        let classes = self.classes();
        if dlogits.dim() != (batch, classes) {
            return Err(Error::shape(
                "network",
                "backward dlogits",
                format!("[{batch}, {classes}]"),
                format!("{:?}", dlogits.shape()),
            ));
        }
        for (dst, &v) in self.dlogits.iter_mut().zip(dlogits.iter()) {
            *dst = v;
        }
        self.backward_from_buffer(batch, None)
    }

    /// Backward from `self.dlogits`, adding each layer's time to `times` when given.
    fn backward_from_buffer(
        &mut self,
        batch: usize,
        mut times: Option<&mut [LayerTime]>,
    ) -> Result<()> {
        let [g0, g1] = &mut self.grads;
        let (mut dy, mut dx): (&mut [f32], &mut [f32]) = (g0, g1);
        for i in (0..self.layers.len()).rev() {
            let upstream: &[f32] = if i + 1 == self.layers.len() {
                &self.dlogits
            } else {
                dy
            };
            let want_dx = (i > 0).then_some(&mut *dx);
            let start = Instant::now();
            self.layers[i].backward(&self.acts[i], &self.acts[i + 1], upstream, want_dx, batch)?;
            if let Some(t) = times.as_deref_mut().and_then(|t| t.get_mut(i)) {
                t.backward += start.elapsed();
            }
            std::mem::swap(&mut dy, &mut dx);
        }
        Ok(())
    }

    /// One training step's computation: forward in training mode, softmax cross-entropy (mean)
    /// against `labels` (one class index per sample), backward. Leaves the gradients in every
    /// parameter's `grad` for an optimizer and returns the loss. Allocates nothing once the buffers
    /// hold the batch.
    pub fn train_step(&mut self, x: ArrayView4<f32>, labels: &[usize]) -> Result<f32> {
        self.step(x, labels, None)
    }

    /// [`Network::train_step`], also returning the wall time of every layer's forward and
    /// backward call (in layer order): what `cnnc bench` reports to show the slow layer.
    pub fn profile_train_step(
        &mut self,
        x: ArrayView4<f32>,
        labels: &[usize],
    ) -> Result<(f32, Vec<LayerTime>)> {
        let mut times = vec![LayerTime::default(); self.layers.len()];
        let loss = self.step(x, labels, Some(&mut times))?;
        Ok((loss, times))
    }

    /// A training step's computation, timing the layers into `times` when given.
    fn step(
        &mut self,
        x: ArrayView4<f32>,
        labels: &[usize],
        mut times: Option<&mut [LayerTime]>,
    ) -> Result<f32> {
        let batch = x.dim().0;
        self.forward_timed(x, Mode::Train, times.as_deref_mut())?;
        let classes = self.classes();
        let logits_len = batch * classes;
        let (acts, dlogits) = (&self.acts, &mut self.dlogits);
        let logits = acts.last().map_or(&[][..], |a| &a[..logits_len]);
        let shape_err = |e: ndarray::ShapeError| Error::State(format!("logits buffer: {e}"));
        let loss = softmax_cross_entropy(
            ArrayView2::from_shape((batch, classes), logits).map_err(shape_err)?,
            labels,
            ArrayViewMut2::from_shape((batch, classes), &mut dlogits[..logits_len])
                .map_err(shape_err)?,
        )?;
        self.backward_from_buffer(batch, times)?;
        Ok(loss)
    }
}

impl Visit for Network {
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        for layer in &mut self.layers {
            layer.visit(f);
        }
    }
}

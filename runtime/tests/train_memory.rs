//! What a training step holds in memory: He et al.'s CIFAR ResNet-20 (`models/resnet20_cifar.yaml`,
//! written out here) trained at batch 64 with SGD momentum, its heap counted by a global
//! allocator (every thread's allocations, so this file holds one test). It prints the accounting
//! `docs/PERFORMANCE.md` quotes (the parameters and their gradients and momentum, the plan's
//! activation and gradient buffers, and the rest: each layer's kept state and the workspaces its
//! passes borrow) and fails when the heap at the step's peak grows past what that accounting
//! allows, e.g. when a layer keeps a copy of its input between forward and backward again.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use cnnc_runtime::config::{
    BatchNorm2dConfig, Conv2dConfig, LayerConfig, LayerDef, LinearConfig, NetworkDef, Source,
};
use cnnc_runtime::optim::{Optimizer, Sgd, SgdConfig};
use cnnc_runtime::{Network, Shape};
use ndarray::Array4;

/// Bytes allocated and not yet freed, and the most there were since the last [`reset_peak`].
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only two
// atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as if the old block lived until the new one exists, as a copy needs.
        grew(new_size);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn reset_peak() -> usize {
    let now = live();
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

const MIB: f64 = 1024.0 * 1024.0;

fn layer(name: &str, config: LayerConfig, inputs: Vec<Source>) -> LayerDef {
    LayerDef {
        name: name.to_owned(),
        config,
        inputs,
    }
}

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize) -> LayerConfig {
    let pad = kernel / 2;
    LayerConfig::Conv2d(Conv2dConfig {
        stride: [stride, stride],
        padding: [pad, pad],
        padding_end: [pad, pad],
        bias: false,
        ..Conv2dConfig::new(cin, cout, [kernel, kernel])
    })
}

/// `models/resnet20_cifar.yaml`: the stem, three stages of three basic blocks (16, 32, 64
/// channels; the first block of stages 2 and 3 with a strided 1x1 projection), average pooling
/// and the classifier.
fn resnet20() -> NetworkDef {
    let mut layers: Vec<LayerDef> = Vec::new();
    let bn = |c| LayerConfig::BatchNorm2d(BatchNorm2dConfig::new(c));
    let push = |layers: &mut Vec<LayerDef>, name: String, config, inputs| {
        layers.push(layer(&name, config, inputs));
        layers.len() - 1
    };
    push(&mut layers, "conv1".into(), conv(3, 16, 3, 1), vec![]);
    push(&mut layers, "bn1".into(), bn(16), vec![]);
    let mut last = push(&mut layers, "relu".into(), LayerConfig::Relu, vec![]);
    let mut cin = 16;
    for (stage, planes) in [16, 32, 64].into_iter().enumerate() {
        for block in 0..3 {
            let p = format!("layer{}.{block}", stage + 1);
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let input = last;
            push(
                &mut layers,
                format!("{p}.conv1"),
                conv(cin, planes, 3, stride),
                vec![],
            );
            push(&mut layers, format!("{p}.bn1"), bn(planes), vec![]);
            push(&mut layers, format!("{p}.relu"), LayerConfig::Relu, vec![]);
            push(
                &mut layers,
                format!("{p}.conv2"),
                conv(planes, planes, 3, 1),
                vec![],
            );
            let bn2 = push(&mut layers, format!("{p}.bn2"), bn(planes), vec![]);
            let shortcut = if stride == 2 {
                let from = vec![Source::Layer(input)];
                let ds = format!("{p}.downsample");
                push(
                    &mut layers,
                    format!("{ds}.0"),
                    conv(cin, planes, 1, 2),
                    from,
                );
                push(&mut layers, format!("{ds}.1"), bn(planes), vec![])
            } else {
                input
            };
            let sum = [Source::Layer(bn2), Source::Layer(shortcut)];
            push(
                &mut layers,
                format!("{p}.add"),
                LayerConfig::Add,
                sum.to_vec(),
            );
            last = push(&mut layers, format!("{p}.relu2"), LayerConfig::Relu, vec![]);
            cin = planes;
        }
    }
    let avg = LayerConfig::AdaptiveAvgPool2d {
        output_size: [1, 1],
    };
    push(&mut layers, "avgpool".into(), avg, vec![]);
    push(&mut layers, "flatten".into(), LayerConfig::FLATTEN, vec![]);
    let fc = LayerConfig::Linear(LinearConfig {
        in_features: 64,
        out_features: 10,
        bias: true,
    });
    push(&mut layers, "fc".into(), fc, vec![]);
    NetworkDef {
        input: [3, 32, 32],
        layers,
    }
}

/// Most bytes of heap a ResNet-20 training step at batch 64 may hold at its peak beyond what
/// any training must (parameters, gradients, momentum, the activations and gradient buffers
/// of the plan): each layer's kept state and the workspaces of the layer running.
const REST_LIMIT_MIB: f64 = 24.0;

/// Most heap the whole step may hold at its peak: 137 MiB when this was written (311 MiB before
/// the convolutions borrowed their workspaces and buffers no backward reads shared slots).
const HELD_LIMIT_MIB: f64 = 150.0;

#[test]
fn a_resnet20_training_step_holds_its_activations_and_little_else() {
    const BATCH: usize = 64;
    let start = live();
    let def = resnet20();
    let mut net = Network::new(&def, 0).expect("ResNet-20 builds");
    let mut opt = Sgd::new(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    })
    .expect("a valid optimizer");
    let x = Array4::from_shape_fn((BATCH, 3, 32, 32), |(n, c, y, x)| {
        ((n * 7 + c * 5 + y * 3 + x) % 17) as f32 / 17.0 - 0.5
    });
    let labels: Vec<usize> = (0..BATCH).map(|n| n % 10).collect();
    let input = x.len() * 4 + labels.len() * 8;

    let params = cnnc_runtime::Model::param_count(&net) * 4;
    let model = cnnc_core::Model::new(None, def.clone()).expect("a valid model");
    let plan = cnnc_core::Plan::new(&model);
    let numel: Vec<usize> = plan.buffers().iter().map(Shape::numel).collect();
    let every_buffer = numel.iter().sum::<usize>() * BATCH * 4;
    let reads: Vec<_> = plan
        .steps()
        .iter()
        .map(|step| net.layers()[step.layer].backward_reads())
        .collect();
    let storage = plan.storage(&reads);
    let activations = storage.len.iter().sum::<usize>() * BATCH * 4;
    let largest = numel.iter().copied().max().unwrap_or(0);
    let gradients = (plan.grad_buffers() * largest + 10) * BATCH * 4;

    net.train_step(x.view(), &labels).expect("a training step");
    opt.step(&mut net).expect("an optimizer step");
    // The second step: everything is allocated already.
    let before = reset_peak();
    net.train_step(x.view(), &labels).expect("a training step");
    opt.step(&mut net).expect("an optimizer step");
    let step_peak = peak() - before;
    assert_eq!(
        live(),
        before,
        "a second step leaves the heap as it found it"
    );

    let held = before - start - input + step_peak;
    let needed = 3 * params + activations + gradients;
    let rest = held as f64 - needed as f64;
    let mib = |b: usize| b as f64 / MIB;
    println!(
        "ResNet-20 at batch {BATCH}, heap at the peak of a training step: {:.1} MiB = \
         parameters {:.1} MiB x 3 (values, gradients, momentum) + activations {:.1} MiB ({} \
         slots for {} buffers, {} of them kept for backward; {:.1} MiB if every buffer were \
         kept) + gradient buffers {:.1} MiB ({}) + the rest {:.1} MiB (layers' kept state, \
         packed weights, workspaces; of which the step's own peak {:.1} MiB)",
        mib(held),
        mib(params),
        mib(activations),
        storage.len.len(),
        numel.len(),
        storage.kept.iter().filter(|&&k| k).count(),
        mib(every_buffer),
        mib(gradients),
        plan.grad_buffers(),
        rest / MIB,
        mib(step_peak),
    );
    assert!(
        rest / MIB <= REST_LIMIT_MIB,
        "a training step holds {:.1} MiB beyond parameters, activations and gradients, more \
         than {REST_LIMIT_MIB} MiB",
        rest / MIB
    );
    assert!(
        mib(held) <= HELD_LIMIT_MIB,
        "a training step holds {:.1} MiB of heap, more than {HELD_LIMIT_MIB} MiB",
        mib(held)
    );
}

//! `cnnc bench`: throughput of a spec's network in the dynamic executor on the four workloads of
//! the performance issue (a training step at batch 64, inference at batch 64 and 256, latency at
//! batch 1), peak memory while training over a Fashion-MNIST-sized dataset, and per-layer times.
//! `--format json` is a contract for outside tools (`bench/compare.py`): see `docs/PERFORMANCE.md`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cnnc_runtime::config::LayerConfig;
use cnnc_runtime::optim::{Optimizer, Sgd, SgdConfig};
use cnnc_runtime::peak;
use cnnc_runtime::simd;
use cnnc_runtime::tensor::threads;
use cnnc_runtime::{LayerTime, Mode, Network, Shape, StepProfile};
use ndarray::{Array4, ArrayView4};
use serde_json::json;

use super::OutputFormat;
use super::model::Spec;

/// Arguments of `cnnc bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    pub format: OutputFormat,
    /// Timed repetitions of each workload; the median is reported.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub runs: u32,
    /// The machine's peak FLOP/s, in GFLOP/s, that "% of peak" refers to (default: measured
    /// here, every thread running the kernels' multiply-adds at once).
    #[arg(long, value_parser = positive_gflops)]
    pub peak_gflops: Option<f64>,
    /// Skip the peak-memory measurement (a child process that trains over a Fashion-MNIST-sized
    /// dataset).
    #[arg(long)]
    pub no_memory: bool,
    /// Run as the memory child: train, then print the peak resident set size in MiB.
    #[arg(long, hide = true)]
    pub memory_child: bool,
}

/// Parses `--peak-gflops`: a positive, finite number.
fn positive_gflops(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a positive number of GFLOP/s")),
    }
}

/// One layer's median times in the training step.
#[derive(Debug)]
struct LayerReport {
    name: String,
    /// The layer's spec keyword (`conv2d`), so time can be summed by kind.
    kind: &'static str,
    time: LayerTime,
    /// The layer before, when this one is a ReLU it applies (which then takes no time).
    fused_into: Option<String>,
    /// The batch norm that stores this add's output in a training step (the add's forward
    /// time is in the batch norm's; its backward is its own).
    stored_by: Option<String>,
}

/// Median times of a training step's phases: the layers' and what lies around them.
#[derive(Debug, Default)]
struct Phases {
    /// Checking the batch and copying it into the internal layout.
    input: Duration,
    /// The forward pass over the layers.
    forward: Duration,
    /// The loss and its gradient.
    loss: Duration,
    /// The backward pass over the layers.
    backward: Duration,
    /// The optimizer's step (SGD with momentum), with the repacking of the weights it changed.
    optimizer: Duration,
}

impl Phases {
    /// The median of each phase over `steps` (profiles and optimizer step times).
    fn median(steps: &[(StepProfile, Duration)]) -> Phases {
        let mid = |f: &dyn Fn(&(StepProfile, Duration)) -> Duration| {
            let mut v: Vec<Duration> = steps.iter().map(f).collect();
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        Phases {
            input: mid(&|s| s.0.input),
            forward: mid(&|s| s.0.forward),
            loss: mid(&|s| s.0.loss_time),
            backward: mid(&|s| s.0.backward),
            optimizer: mid(&|s| s.1),
        }
    }
}

/// Batch of the training workload.
const TRAIN_BATCH: usize = 64;
/// Samples in the memory workload's dataset: the training split of Fashion-MNIST.
const MEMORY_SAMPLES: usize = 60_000;
/// Training steps of the memory workload: past the first, every buffer is sized, so the peak is
/// reached.
const MEMORY_STEPS: usize = 20;
/// Untimed runs before each timed workload (buffers sized, caches and thread pool warm).
const WARMUP: usize = 3;
/// How long the round-trip probe waits for the second thread before it reports nothing.
const ROUND_TRIP_PATIENCE: Duration = Duration::from_millis(500);

/// Runs `cnnc bench`.
/// Checks `CNNC_SIMD` before a command computes: a value that names no instruction family is
/// an error; one above what the CPU has runs the CPU's widest, with a warning on stderr.
pub fn check_simd() -> anyhow::Result<()> {
    let choice = simd::simd_override()?;
    if let Some(warning) = choice.capped() {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let spec = Spec::load(&args.spec)?;
    if args.memory_child {
        let mb = memory_child(&spec)?;
        println!("{mb:.1}");
        return Ok(ExitCode::SUCCESS);
    }
    let report = measure(&spec, args)?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report.json())?),
        OutputFormat::Human => report.print(),
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything one `cnnc bench` run measured.
struct Report {
    spec: String,
    threads: usize,
    runs: u32,
    /// The instructions the kernels ran: `AVX-512`, `AVX2+FMA` or `scalar`.
    isa: &'static str,
    peak_gflops: f64,
    /// Where the peak comes from: `measured: AVX-512, 2 thread(s)` or `--peak-gflops`.
    peak_source: String,
    forward_flop: f64,
    train_flop: f64,
    train: Duration,
    infer64: Duration,
    infer256: Duration,
    latency: Duration,
    peak_rss_mb: Option<f64>,
    layers: Vec<LayerReport>,
    /// The profiled training step's phases.
    phases: Phases,
    /// A cache line's round trip between two of the pool's threads before the workloads and
    /// after them (`None` with one thread): how far apart the threads ran.
    round_trip: [Option<Duration>; 2],
}

/// Floating-point operations per sample of a forward pass and of a training step (forward, input
/// and weight gradients; the first layer computes no input gradient), counting a multiply-add
/// as two. Only convolutions and linear layers count.
fn flops(spec: &Spec, net: &Network) -> (f64, f64) {
    let (mut forward, mut train) = (0.0, 0.0);
    for (i, (def, layer)) in spec.def.layers.iter().zip(net.layers()).enumerate() {
        let per_output = match (&def.config, layer.input_shape()) {
            (LayerConfig::Conv2d(c), Shape::Chw([channels, ..])) => {
                channels * c.kernel_size[0] * c.kernel_size[1]
            }
            (LayerConfig::Linear(c), _) => c.in_features,
            _ => continue,
        };
        // What the layer computes: the next layer's input, even where the layer also applies
        // what follows it (a fused max pool makes its own output the pool's).
        let computed = net
            .layers()
            .get(i + 1)
            .map_or(layer.output_shape(), |next| next.input_shape());
        let f = 2.0 * (computed.numel() * per_output) as f64;
        forward += f;
        train += if i == 0 { 2.0 * f } else { 3.0 * f };
    }
    (forward, train)
}

/// A deterministic batch of `n` samples in `[-1, 1)` and labels.
fn batch(n: usize, [c, h, w]: [usize; 3], classes: usize) -> (Array4<f32>, Vec<usize>) {
    let x = Array4::from_shape_fn((n, c, h, w), |(i, c, y, x)| {
        (((i * 7919 + c * 104_729 + y * 31 + x * 17) % 1000) as f32) / 500.0 - 1.0
    });
    (x, (0..n).map(|i| i % classes.max(1)).collect())
}

/// Median wall time of `runs` calls of `f`, after [`WARMUP`] untimed ones.
fn median(runs: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    for _ in 0..WARMUP {
        f()?;
    }
    let mut times = Vec::with_capacity(runs as usize);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// SGD with momentum 0.9, what the training workload updates with.
fn sgd() -> anyhow::Result<Sgd> {
    Ok(Sgd::new(SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.01)
    })?)
}

fn measure(spec: &Spec, args: &Args) -> anyhow::Result<Report> {
    let mut net = spec.network(0)?;
    let (input, classes) = (spec.def.input, net.classes());
    let (forward_flop, train_flop) = flops(spec, &net);
    let mut opt = sgd()?;

    let before = peak::round_trip(ROUND_TRIP_PATIENCE);
    let (x, labels) = batch(TRAIN_BATCH, input, classes);
    let train = median(args.runs, || {
        net.train_step(x.view(), &labels)?;
        opt.step(&mut net)?;
        Ok(())
    })?;
    // The profiled steps take the optimizer's step too, so each starts from freshly updated
    // weights as a training step does.
    let mut steps: Vec<(StepProfile, Duration)> = Vec::with_capacity(args.runs as usize);
    median(args.runs, || {
        let profile = net.profile_train_step(x.view(), &labels)?;
        let start = Instant::now();
        opt.step(&mut net)?;
        steps.push((profile, start.elapsed()));
        Ok(())
    })?;
    let phases = Phases::median(&steps);
    let infer = |net: &mut Network, x: ArrayView4<f32>| {
        median(args.runs, || {
            net.forward_view(x, Mode::Eval)?;
            Ok(())
        })
    };
    let infer64 = infer(&mut net, x.view())?;
    let (x256, _) = batch(256, input, classes);
    let infer256 = infer(&mut net, x256.view())?;
    let (x1, _) = batch(1, input, classes);
    // Latency is noisier than throughput: more runs, each short.
    let latency = median(args.runs.saturating_mul(10), || {
        net.forward_view(x1.view(), Mode::Eval)?;
        Ok(())
    })?;
    let after = peak::round_trip(ROUND_TRIP_PATIENCE);
    let (peak_gflops, peak_source) = match args.peak_gflops {
        Some(gflops) => (gflops, "--peak-gflops".to_owned()),
        None => {
            let peak = peak::measure();
            let source = format!("measured: {}, {} thread(s)", peak.isa, peak.threads);
            (peak.gflops, source)
        }
    };
    let peak_rss_mb = if args.no_memory {
        None
    } else {
        Some(memory_in_child(args)?)
    };
    let names = spec
        .def
        .layers
        .iter()
        .map(|l| (l.name.clone(), l.config.kind().keyword()));
    let layers = names
        .enumerate()
        .map(|(i, (name, kind))| {
            let mut f: Vec<Duration> = steps.iter().map(|s| s.0.layers[i].forward).collect();
            let mut b: Vec<Duration> = steps.iter().map(|s| s.0.layers[i].backward).collect();
            f.sort();
            b.sort();
            let time = LayerTime {
                forward: f.get(f.len() / 2).copied().unwrap_or_default(),
                backward: b.get(b.len() / 2).copied().unwrap_or_default(),
            };
            // The layer that applies a fused one: the nearest before it that is not fused.
            let head = (0..i).rev().find(|&p| !net.is_fused(p));
            let fused_into = head
                .filter(|_| net.is_fused(i))
                .and_then(|p| spec.def.layers.get(p))
                .map(|l| l.name.clone());
            let stored_by = net
                .stored_by(i)
                .and_then(|p| spec.def.layers.get(p))
                .map(|l| l.name.clone());
            LayerReport {
                name,
                kind,
                time,
                fused_into,
                stored_by,
            }
        })
        .collect();
    Ok(Report {
        spec: args.spec.display().to_string(),
        threads: threads(),
        runs: args.runs,
        isa: simd::simd().label(),
        peak_gflops,
        peak_source,
        forward_flop,
        train_flop,
        train,
        infer64,
        infer256,
        latency,
        peak_rss_mb,
        layers,
        phases,
        round_trip: [before, after],
    })
}

/// Runs this executable as the memory child (a fresh process, so nothing measured here counts)
/// and reads back its peak resident set size.
fn memory_in_child(args: &Args) -> anyhow::Result<f64> {
    let exe = std::env::current_exe().context("cannot find the cnnc executable")?;
    let out = Command::new(exe)
        .arg("bench")
        .arg(&args.spec)
        .arg("--memory-child")
        .output()
        .context("cannot run the memory measurement")?;
    if !out.status.success() {
        bail!(
            "the memory measurement failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("the memory measurement printed {text:?}, not a number"))
}

/// Side of a Fashion-MNIST image.
const FASHION_SIDE: usize = 28;

/// The memory workload: Fashion-MNIST's training split as it is held in memory (60,000 grey
/// 28 x 28 images, one byte a pixel), each batch of 64 converted to `f32` and fitted to the spec's
/// input (centred, zero-padded or cropped, the grey channel repeated), [`MEMORY_STEPS`] training
/// steps with SGD momentum. Returns the peak resident set size (Linux's `VmHWM`) in MiB.
fn memory_child(spec: &Spec) -> anyhow::Result<f64> {
    let mut net = spec.network(0)?;
    let [c, h, w] = spec.def.input;
    let image = FASHION_SIDE * FASHION_SIDE;
    let classes = net.classes().max(1);
    let data: Vec<u8> = (0..MEMORY_SAMPLES * image)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let labels: Vec<usize> = (0..MEMORY_SAMPLES).map(|i| i % classes).collect();
    let mut opt = sgd()?;
    let mut x = Array4::zeros((TRAIN_BATCH, c, h, w));
    let mut y = vec![0; TRAIN_BATCH];
    // Offsets of the image inside the input (negative: cropped).
    let (oy, ox) = (
        h as isize / 2 - FASHION_SIDE as isize / 2,
        w as isize / 2 - FASHION_SIDE as isize / 2,
    );
    for step in 0..MEMORY_STEPS {
        for (j, (mut dst, label)) in x.outer_iter_mut().zip(&mut y).enumerate() {
            // A fixed stride through the dataset stands in for a shuffled order.
            let i = (step * TRAIN_BATCH + j) * 7919 % MEMORY_SAMPLES;
            let src = &data[i * image..(i + 1) * image];
            for ((_, yy, xx), d) in dst.indexed_iter_mut() {
                let (sy, sx) = (yy as isize - oy, xx as isize - ox);
                let inside = (0..FASHION_SIDE as isize).contains(&sy)
                    && (0..FASHION_SIDE as isize).contains(&sx);
                *d = if inside {
                    f32::from(src[sy as usize * FASHION_SIDE + sx as usize]) / 255.0
                } else {
                    0.0
                };
            }
            *label = labels[i];
        }
        net.train_step(x.view(), &y)?;
        opt.step(&mut net)?;
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .context("peak memory needs /proc/self/status (Linux)")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM line in /proc/self/status")?;
    Ok(kib / 1024.0)
}

impl Report {
    fn images_per_s(batch: usize, time: Duration) -> f64 {
        batch as f64 / time.as_secs_f64()
    }

    /// Percent of the peak FLOP/s reached by `flop` per sample at `images_per_s`.
    fn percent(&self, flop: f64, images_per_s: f64) -> f64 {
        100.0 * flop * images_per_s / (self.peak_gflops * 1e9)
    }

    fn json(&self) -> serde_json::Value {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let train = Self::images_per_s(TRAIN_BATCH, self.train);
        let infer64 = Self::images_per_s(64, self.infer64);
        let infer256 = Self::images_per_s(256, self.infer256);
        json!({
            "spec": self.spec,
            "threads": self.threads,
            "runs": self.runs,
            "isa": self.isa,
            "train_images_per_s": train,
            "train_step_ms": ms(self.train),
            "infer64_images_per_s": infer64,
            "infer64_ms": ms(self.infer64),
            "infer256_images_per_s": infer256,
            "infer256_ms": ms(self.infer256),
            "latency_batch1_ms": ms(self.latency),
            "peak_rss_mb": self.peak_rss_mb,
            "forward_mflop_per_image": self.forward_flop / 1e6,
            "train_mflop_per_image": self.train_flop / 1e6,
            "peak_gflops": self.peak_gflops,
            "peak_source": self.peak_source,
            "train_percent_of_peak": self.percent(self.train_flop, train),
            "infer64_percent_of_peak": self.percent(self.forward_flop, infer64),
            "infer256_percent_of_peak": self.percent(self.forward_flop, infer256),
            "layers": self.layers.iter().map(|l| json!({
                "name": l.name,
                "kind": l.kind,
                "forward_ms": ms(l.time.forward),
                "backward_ms": ms(l.time.backward),
                "fused_into": l.fused_into,
                "stored_by": l.stored_by,
            })).collect::<Vec<_>>(),
            "thread_round_trip_ns": self.round_trip[0].zip(self.round_trip[1]).map(|(b, a)| json!({
                "before": b.as_secs_f64() * 1e9,
                "after": a.as_secs_f64() * 1e9,
            })),
            "train_phases": {
                "input_ms": ms(self.phases.input),
                "forward_ms": ms(self.phases.forward),
                "loss_ms": ms(self.phases.loss),
                "backward_ms": ms(self.phases.backward),
                "optimizer_ms": ms(self.phases.optimizer),
                "layers_forward_ms": self.layers.iter().map(|l| ms(l.time.forward)).sum::<f64>(),
                "layers_backward_ms": self.layers.iter().map(|l| ms(l.time.backward)).sum::<f64>(),
            },
        })
    }

    fn print(&self) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{}: {} thread(s), {} kernels, median of {} runs; % of a {:.0} GFLOP/s peak ({})",
            self.spec, self.threads, self.isa, self.runs, self.peak_gflops, self.peak_source
        );
        println!(
            "  {:<26} {:>6} {:>10} {:>10} {:>7}",
            "workload", "batch", "ms", "images/s", "% peak"
        );
        let rows = [
            (
                "training step (SGD)",
                TRAIN_BATCH,
                self.train,
                self.train_flop,
            ),
            ("inference", 64, self.infer64, self.forward_flop),
            ("inference", 256, self.infer256, self.forward_flop),
            ("latency", 1, self.latency, self.forward_flop),
        ];
        for (what, batch, time, flop) in rows {
            let rate = Self::images_per_s(batch, time);
            println!(
                "  {what:<26} {batch:>6} {:>10.3} {rate:>10.0} {:>6.1}%",
                ms(time),
                self.percent(flop, rate)
            );
        }
        match self.peak_rss_mb {
            Some(mb) => {
                println!(
                    "  peak memory, training over {MEMORY_SAMPLES} Fashion-MNIST-sized images: {mb:.1} MiB"
                )
            }
            None => println!("  peak memory: not measured (--no-memory)"),
        }
        let ns = |t: Option<Duration>| match t {
            Some(t) => format!("{:.0} ns", t.as_secs_f64() * 1e9),
            None => "not measured (the threads did not run at once: a busy machine)".to_owned(),
        };
        if self.threads > 1 {
            println!(
                "  a cache line's round trip between two threads: {} before, {} after the \
                 workloads (tens of ns: one die; hundreds: different dies, slower to share data)",
                ns(self.round_trip[0]),
                ns(self.round_trip[1])
            );
        }
        let p = &self.phases;
        println!(
            "\n  training step by phase (medians, ms): input {:.3}, forward {:.3}, loss {:.3}, \
             backward {:.3}, optimizer {:.3}",
            ms(p.input),
            ms(p.forward),
            ms(p.loss),
            ms(p.backward),
            ms(p.optimizer)
        );
        println!(
            "\n  per layer, training step at batch {TRAIN_BATCH} (medians)\n  {:<20} {:>11} {:>12}",
            "layer", "forward ms", "backward ms"
        );
        for l in &self.layers {
            match (&l.fused_into, &l.stored_by) {
                (Some(into), _) => println!("  {:<20}   (fused into {into})", l.name),
                (None, Some(by)) => println!(
                    "  {:<20} {:>11} {:>12.3}   (forward stored by {by})",
                    l.name,
                    "-",
                    ms(l.time.backward)
                ),
                (None, None) => println!(
                    "  {:<20} {:>11.3} {:>12.3}",
                    l.name,
                    ms(l.time.forward),
                    ms(l.time.backward)
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys outside tools read (`bench/compare.py`) and what they hold.
    #[test]
    fn json_keeps_the_contract_keys() {
        let report = Report {
            spec: "m.yaml".to_owned(),
            threads: 2,
            runs: 5,
            isa: "AVX2+FMA",
            peak_gflops: 180.0,
            peak_source: "--peak-gflops".to_owned(),
            forward_flop: 24.7e6,
            train_flop: 69.2e6,
            train: Duration::from_millis(20),
            infer64: Duration::from_millis(8),
            infer256: Duration::from_millis(32),
            latency: Duration::from_micros(250),
            peak_rss_mb: Some(100.5),
            layers: vec![LayerReport {
                name: "fc".to_owned(),
                kind: "linear",
                time: LayerTime::default(),
                fused_into: None,
                stored_by: None,
            }],
            phases: Phases {
                optimizer: Duration::from_millis(3),
                ..Phases::default()
            },
            round_trip: [
                Some(Duration::from_nanos(55)),
                Some(Duration::from_nanos(330)),
            ],
        };
        let json = report.json();
        assert_eq!(json["train_images_per_s"], 3200.0);
        assert_eq!(json["infer64_images_per_s"], 8000.0);
        assert_eq!(json["infer256_images_per_s"], 8000.0);
        assert_eq!(json["latency_batch1_ms"], 0.25);
        assert_eq!(json["peak_rss_mb"], 100.5);
        assert_eq!(json["layers"][0]["name"], "fc");
        assert_eq!(json["layers"][0]["kind"], "linear");
        assert_eq!(json["isa"], "AVX2+FMA");
        assert_eq!(json["train_phases"]["optimizer_ms"], 3.0);
        assert_eq!(json["train_phases"]["input_ms"], 0.0);
        assert_eq!(json["thread_round_trip_ns"]["before"], 55.0);
        assert_eq!(json["thread_round_trip_ns"]["after"], 330.0);
        let one_thread = Report {
            round_trip: [None, None],
            ..report
        };
        assert!(one_thread.json()["thread_round_trip_ns"].is_null());
    }
}

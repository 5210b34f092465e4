#!/usr/bin/env python3
"""Side-by-side benchmark: cnnc against PyTorch on the seed model (CustomCNN), same machine.

`--model mobilenet_style` measures the depthwise-separable network of
models/mobilenet_style.yaml instead (grouped 3x3 convolutions, 1x1 ones, batchnorm2d), whose
PyTorch twin is written below. `--spec models/X.yaml --torch NAME` measures any spec against the
matching PyTorch model: `resnet20` (tools/resnet20_cifar.py, the model of
models/resnet20_cifar.yaml), torchvision's `resnet18` and `mobilenet_v2` (num_classes=10), or one
of the `--model` twins. `--input C,H,W` runs both at another input size (cnnc on a copy of the
YAML spec with its `input:` line replaced); torchvision's models default to 3,32,32, as the
performance issue measures them. `--profile` adds a per-layer breakdown of one training step on
both sides: cnnc's per-layer forward and backward (`cnnc bench`'s `layers`, medians) and
PyTorch's operators by input shape (torch.profiler). `--isa avx2` caps both sides' instructions
(cnnc's CNNC_SIMD; PyTorch's ATEN_CPU_CAPABILITY and oneDNN's ONEDNN_MAX_CPU_ISA, set before torch
is imported), so the AVX2 paths can be timed on an AVX-512 machine.

Runs the four workloads of the performance issue on both, in the same invocation and alternating
(cnnc, PyTorch, cnnc, ...) so both see the same machine load, then prints the median of each side
and the ratio per workload:

- training step, batch 64: forward + cross-entropy + backward + SGD(lr=0.01, momentum=0.9)
- inference, batch 64 and batch 256 (eval mode, no autograd)
- latency, batch 1
- peak memory (VmHWM) of a fresh process training 20 steps of batch 64 over Fashion-MNIST's
  training split as it is held in memory (60,000 x 28 x 28 uint8), each batch zero-padded to
  32 x 32 and its grey channel repeated three times to fit the model's input

Both sides use f32, the same thread count (RAYON_NUM_THREADS / torch.set_num_threads) and the same
batch sizes. The script installs nothing: it needs PyTorch in the Python that runs it, and a built
`cnnc` (cargo build --release). Usage:

    tools/.venv/bin/python bench/compare.py [--rounds 5] [--threads 2] [--cnnc target/release/cnnc]
        [--model custom_cnn|mobilenet_style | --spec SPEC --torch NAME [--input C,H,W]] [--profile]
        [--isa avx512|avx2]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("custom_cnn", "mobilenet_style")
# --torch NAME: the PyTorch model, and the input size it runs at when --input does not say.
TORCH_MODELS = {
    "custom_cnn": None,
    "mobilenet_style": None,
    "resnet20": None,
    "resnet18": (3, 32, 32),
    "mobilenet_v2": (3, 32, 32),
}
# --isa: the environment that caps each side at an instruction family (maxima, as the CPU's widest
# is used when it has less). PyTorch reads its two when torch is imported and oneDNN starts.
ISA_ENV = {
    "avx512": {"CNNC_SIMD": "avx512", "ATEN_CPU_CAPABILITY": "avx512",
               "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
    "avx2": {"CNNC_SIMD": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
MEMORY_SAMPLES = 60_000
MEMORY_STEPS = 20
WARMUP = 3

# workload key (cnnc bench JSON), label, higher is better, target ratio cnnc / PyTorch
WORKLOADS = [
    ("train_images_per_s", "training step b64 (images/s)", True, 1.5),
    ("infer64_images_per_s", "inference b64 (images/s)", True, 2.0),
    ("infer256_images_per_s", "inference b256 (images/s)", True, 2.0),
    ("latency_batch1_ms", "latency b1 (ms)", False, 0.4),
    ("peak_rss_mb", "peak memory, training (MiB)", False, 0.25),
]


def import_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(
            "error: PyTorch is not installed in this Python "
            f"({sys.executable}); this script installs nothing. Run it with a Python that has "
            "torch, e.g. tools/.venv/bin/python bench/compare.py"
        )
    return torch


def custom_cnn(torch):
    """PyTorch's CustomCNN, the model of models/custom_cnn.yaml."""
    nn = torch.nn

    class CustomCNN(nn.Module):
        def __init__(self):
            super().__init__()
            block = lambda cin, cout: nn.Sequential(  # noqa: E731
                nn.Conv2d(cin, cout, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2)
            )
            self.layer1, self.layer2, self.layer3 = block(3, 32), block(32, 32), block(32, 64)
            self.fc1 = nn.Linear(1024, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))

    torch.manual_seed(0)
    return CustomCNN()


def mobilenet_style(torch):
    """The PyTorch twin of models/mobilenet_style.yaml (its layers in order; `.` in names is `_`)."""
    nn = torch.nn

    def conv_bn(name, cin, cout, k, stride=1, groups=1):
        conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)
        return [(name, conv), (f"{name}_bn", nn.BatchNorm2d(cout)), (None, nn.ReLU())]

    layers = [("stem.0", nn.Conv2d(3, 16, 3, padding=1, bias=False)), ("stem.1", nn.BatchNorm2d(16)),
              (None, nn.ReLU())]
    for block, (cin, cout, stride) in enumerate([(16, 32, 1), (32, 64, 2), (64, 128, 2)], start=1):
        layers += conv_bn(f"block{block}.dw", cin, cin, 3, stride, groups=cin)
        layers += conv_bn(f"block{block}.pw", cin, cout, 1)
    layers += [(None, nn.AvgPool2d(8)), (None, nn.Flatten()), ("fc", nn.Linear(128, 10))]

    class MobileNetStyle(nn.Module):
        def __init__(self):
            super().__init__()
            self.names = []
            for i, (name, module) in enumerate(layers):
                name = name or str(i)
                self.add_module(name.replace(".", "_"), module)
                self.names.append(name.replace(".", "_"))

        def forward(self, x):
            for name in self.names:
                x = getattr(self, name)(x)
            return x

    return MobileNetStyle()


def build_model(torch, name):
    """The PyTorch model `name` (a key of TORCH_MODELS), seeded."""
    torch.manual_seed(0)
    if name == "custom_cnn":
        return custom_cnn(torch)
    if name == "mobilenet_style":
        return mobilenet_style(torch)
    if name == "resnet20":
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        from resnet20_cifar import ResNet20

        return ResNet20()
    try:
        import torchvision
    except ImportError:
        sys.exit(f"error: --torch {name} needs torchvision in this Python ({sys.executable})")
    return getattr(torchvision.models, name)(num_classes=10)


def spec_input(spec):
    """The input size of a spec: YAML's `input: [C, H, W]` or the DSL's `input (C, H, W)` (None
    when the file does not say it that way)."""
    with open(spec) as f:
        text = f.read()
    m = re.search(r"^input:\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]", text, re.M) or re.search(
        r"^input\s*\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\)", text, re.M)
    return tuple(int(v) for v in m.groups()) if m else None


def resized_spec(spec, shape, tmpdir):
    """`spec` itself when it already takes `shape`, else a copy whose `input:` line says `shape`."""
    have = spec_input(spec)
    if have == tuple(shape):
        return spec
    if have is None or not spec.endswith((".yaml", ".yml")):
        sys.exit(f"error: {spec}: running it at {'x'.join(map(str, shape))} needs a YAML spec with "
                 "an `input: [C, H, W]` line; write the size into the spec instead")
    with open(spec) as f:
        text = f.read()
    text = re.sub(r"^input:.*$", f"input: [{shape[0]}, {shape[1]}, {shape[2]}]", text, count=1,
                  flags=re.M)
    path = os.path.join(tmpdir, os.path.basename(spec))
    with open(path, "w") as f:
        f.write(text)
    return path


def parse_input(text):
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive integers), got {text!r}")
    return shape


def median_time(runs, fn):
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_train_step(torch, model, shape):
    """A training step at batch 64 (forward, cross-entropy, backward, SGD with momentum)."""
    f = torch.nn.functional
    x64 = torch.rand(64, *shape) * 2 - 1
    y64 = torch.arange(64) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train():
        opt.zero_grad()
        f.cross_entropy(model(x64), y64).backward()
        opt.step()

    return train


def torch_round(torch, model, runs, shape):
    """One round of the four timed workloads on PyTorch; same keys as `cnnc bench --format json`."""
    x64 = torch.rand(64, *shape) * 2 - 1
    x256 = torch.rand(256, *shape) * 2 - 1
    x1 = torch.rand(1, *shape) * 2 - 1
    train = torch_train_step(torch, model, shape)

    model.train()
    train_s = median_time(runs, train)
    model.eval()
    with torch.inference_mode():
        infer64 = median_time(runs, lambda: model(x64))
        infer256 = median_time(runs, lambda: model(x256))
        latency = median_time(runs * 10, lambda: model(x1))
    return {
        "train_images_per_s": 64 / train_s,
        "infer64_images_per_s": 64 / infer64,
        "infer256_images_per_s": 256 / infer256,
        "latency_batch1_ms": latency * 1e3,
    }


def vm_hwm_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def torch_memory_child(threads, name, shape):
    """The memory workload in this (fresh) process; prints VmHWM in MiB."""
    torch = import_torch()
    torch.set_num_threads(threads)
    model = build_model(torch, name)
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (MEMORY_SAMPLES, 1, 28, 28), dtype=torch.uint8, generator=gen)
    labels = torch.arange(MEMORY_SAMPLES) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for step in range(MEMORY_STEPS):
        idx = (torch.arange(64) + step * 64) * 7919 % MEMORY_SAMPLES
        # Centred in the model's input, zero-padded (or cropped), grey repeated over the channels.
        top, left = (shape[1] - 28) // 2, (shape[2] - 28) // 2
        pad = (left, shape[2] - 28 - left, top, shape[1] - 28 - top)
        x = torch.nn.functional.pad(data[idx].float() / 255, pad).expand(-1, shape[0], -1, -1)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels[idx]).backward()
        opt.step()
    print(f"{vm_hwm_mb():.1f}")


def torch_memory(threads, name, shape):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--torch-memory-child", "--threads", str(threads),
         "--torch", name, "--input", ",".join(map(str, shape))],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout.strip())


def cnnc_round(cnnc, spec, threads, runs, memory):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [cnnc, "bench", spec, "--format", "json", "--runs", str(runs)]
    if not memory:
        cmd.append("--no-memory")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout)


# The performance issue's targets for the models that are not the seed (None: no target).
TARGETS = {
    name: {"train_images_per_s": train, "infer64_images_per_s": None,
           "infer256_images_per_s": infer256, "latency_batch1_ms": None}
    for name, train, infer256 in [("resnet20", 1.5, 2.0), ("resnet18", 1.3, 1.5),
                                  ("mobilenet_v2", 1.5, 1.5), ("mobilenet_style", 1.5, 1.5)]
}
PROFILE_STEPS = 10


def round_trip(bench):
    """How far apart cnnc's threads ran in one round (`cnnc bench`'s `thread_round_trip_ns`): a
    cache line's round trip of tens of ns means one die, hundreds means two, where every buffer
    one thread writes and the other reads costs more; read rounds of the two placements apart."""
    t = bench.get("thread_round_trip_ns")
    if not t:
        return "round trip not measured"
    return f"round trip {t['before']:.0f} / {t['after']:.0f} ns"


def cnnc_layers(rounds):
    """cnnc's per-layer forward and backward ms of a training step, the median over the rounds."""
    layers = []
    for i, layer in enumerate(rounds[0]["layers"]):
        fwd = statistics.median(r["layers"][i]["forward_ms"] for r in rounds)
        bwd = statistics.median(r["layers"][i]["backward_ms"] for r in rounds)
        layers.append({"name": layer["name"], "kind": layer.get("kind"), "forward_ms": fwd,
                       "backward_ms": bwd, "fused_into": layer.get("fused_into")})
    return layers


def torch_profile(torch, model, shape):
    """PyTorch's training step by operator and input shape (torch.profiler, self CPU time), ms per
    step, largest first."""
    from torch.profiler import ProfilerActivity, profile

    model.train()
    train = torch_train_step(torch, model, shape)
    for _ in range(WARMUP):
        train()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(PROFILE_STEPS):
            train()
    ops = []
    for event in prof.key_averages(group_by_input_shape=True):
        ms = event.self_cpu_time_total / 1e3 / PROFILE_STEPS
        if ms >= 0.01:
            shapes = [s for s in (event.input_shapes or []) if s][:2]
            ops.append({"op": event.key, "shapes": shapes, "ms": ms, "calls": event.count // PROFILE_STEPS})
    return sorted(ops, key=lambda o: -o["ms"])


def print_profile(layers, ops):
    """Prints cnnc's per-layer times, totals by layer kind, and PyTorch's largest operators."""
    total = sum(l["forward_ms"] + l["backward_ms"] for l in layers) or 1.0
    print(f"  cnnc training step by layer (median ms; {total:.2f} ms in layers):")
    print(f"    {'layer':<28} {'kind':<20} {'forward':>8} {'backward':>9} {'share':>6}")
    for l in layers:
        if l["fused_into"]:
            print(f"    {l['name']:<28} {l['kind'] or '':<20} fused into {l['fused_into']}")
            continue
        t = l["forward_ms"] + l["backward_ms"]
        print(f"    {l['name']:<28} {l['kind'] or '':<20} {l['forward_ms']:>8.3f} "
              f"{l['backward_ms']:>9.3f} {100 * t / total:>5.1f}%")
    kinds = {}
    for l in layers:
        k = kinds.setdefault(l["kind"] or "?", [0.0, 0.0])
        k[0] += l["forward_ms"]
        k[1] += l["backward_ms"]
    print("  cnnc by layer kind (forward / backward ms):")
    for kind, (f, b) in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
        print(f"    {kind:<20} {f:>8.3f} {b:>9.3f} {100 * (f + b) / total:>5.1f}%")
    torch_total = sum(o["ms"] for o in ops) or 1.0
    print(f"  PyTorch training step by operator and input shape (self CPU ms per step; "
          f"{torch_total:.2f} ms in all):")
    for o in ops[:30]:
        shapes = " ".join("x".join(map(str, s)) for s in o["shapes"])
        print(f"    {o['op']:<40} {shapes:<28} {o['calls']:>4} {o['ms']:>8.3f} "
              f"{100 * o['ms'] / torch_total:>5.1f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (default 2)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per workload and round")
    parser.add_argument("--cnnc", default=os.path.join(ROOT, "target", "release", "cnnc"),
                        help="the cnnc executable (default target/release/cnnc)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--model", choices=MODELS, default="custom_cnn",
                        help="models/<MODEL>.yaml and its PyTorch twin (default custom_cnn)")
    parser.add_argument("--spec", help="a spec to run instead of --model's (needs --torch)")
    parser.add_argument("--torch", choices=sorted(TORCH_MODELS),
                        help="the PyTorch model matching --spec")
    parser.add_argument("--input", type=parse_input,
                        help="C,H,W: the input size of both sides (default: the spec's, or 3,32,32 "
                             "for torchvision's models)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a per-layer breakdown of a training step on both sides")
    parser.add_argument("--isa", choices=sorted(ISA_ENV),
                        help="cap both sides at this instruction family (default: the CPU's widest)")
    parser.add_argument("--torch-memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.isa:
        if "torch" in sys.modules:
            sys.exit("error: --isa must be set before torch is imported")
        # Inherited by cnnc's rounds and PyTorch's memory child; read by torch when imported.
        os.environ.update(ISA_ENV[args.isa])
    if args.torch_memory_child:
        return torch_memory_child(args.threads, args.torch or args.model, args.input or (3, 32, 32))
    if (args.spec is None) != (args.torch is None):
        parser.error("--spec and --torch go together")
    name = args.torch or args.model
    spec = args.spec or os.path.join(ROOT, "models", f"{args.model}.yaml")
    if not os.path.isfile(spec):
        sys.exit(f"error: no spec at {spec}")

    torch = import_torch()
    if not os.access(args.cnnc, os.X_OK):
        sys.exit(f"error: no cnnc executable at {args.cnnc}; build it with cargo build --release "
                 "or pass --cnnc PATH")
    shape = args.input or TORCH_MODELS.get(name) or spec_input(spec)
    if shape is None:
        sys.exit(f"error: {spec}: cannot read its input size; pass --input C,H,W")
    tmpdir = tempfile.TemporaryDirectory(prefix="cnnc-compare-")
    spec = resized_spec(spec, shape, tmpdir.name)
    torch.set_num_threads(args.threads)
    model = build_model(torch, name)
    load_before = os.getloadavg()
    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(cnnc_round(args.cnnc, spec, args.threads, args.runs, memory=(r == 0)))
        theirs.append(torch_round(torch, model, args.runs, shape))
        print(f"round {r + 1}/{args.rounds}: cnnc train {ours[-1]['train_images_per_s']:.0f} img/s, "
              f"PyTorch train {theirs[-1]['train_images_per_s']:.0f} img/s "
              f"(load {os.getloadavg()[0]:.1f}; {round_trip(ours[-1])})", file=sys.stderr)
    theirs[0]["peak_rss_mb"] = torch_memory(args.threads, name, shape)
    profile = torch_profile(torch, model, shape) if args.profile else None
    load_after = os.getloadavg()
    targets = TARGETS.get(name, {})

    rows = []
    for key, label, higher, target in WORKLOADS:
        target = targets.get(key, target)
        ours_k = [o[key] for o in ours if o.get(key) is not None]
        theirs_k = [t[key] for t in theirs if t.get(key) is not None]
        a, b = statistics.median(ours_k), statistics.median(theirs_k)
        ratio = a / b
        met = None if target is None else ratio >= target if higher else ratio <= target
        # The spread over rounds: on a shared machine one side can change speed between rounds.
        rows.append({"workload": key, "label": label, "cnnc": a, "pytorch": b, "ratio": ratio,
                     "target": None if target is None else f"{'>=' if higher else '<='} {target}",
                     "met": met,
                     "cnnc_range": [min(ours_k), max(ours_k)],
                     "pytorch_range": [min(theirs_k), max(theirs_k)]})
    pct = statistics.median(o["train_percent_of_peak"] for o in ours)
    isa = {"cnnc": ours[0].get("isa"), "pytorch": torch.backends.cpu.get_cpu_capability()}
    result = {"model": name, "spec": args.spec or spec, "input": list(shape), "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
              "isa": isa,
              "load_before": load_before, "load_after": load_after, "workloads": rows,
              "cnnc_train_percent_of_peak": pct,
              "thread_round_trip_ns": [o.get("thread_round_trip_ns") for o in ours],
              "peak_gflops": ours[0]["peak_gflops"]}
    if args.profile:
        result["cnnc_layers"] = cnnc_layers(ours)
        result["pytorch_ops"] = profile
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{name} ({'x'.join(map(str, shape))}): cnnc vs PyTorch {torch.__version__}, {args.threads} threads, median of {args.rounds} "
          f"alternating rounds; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; "
          f"kernels: cnnc {isa['cnnc']}, PyTorch {isa['pytorch']}")
    print(f"  {'workload':<30} {'cnnc':>10} {'PyTorch':>10} {'ratio':>7} {'target':>8}")
    for row in rows:
        verdict = "" if row["met"] is None else "met" if row["met"] else "NOT met"
        print(f"  {row['label']:<30} {row['cnnc']:>10.2f} {row['pytorch']:>10.2f} "
              f"{row['ratio']:>6.2f}x {row['target'] or '-':>8} {verdict}")
    print(f"  cnnc training step: {pct:.0f}% of a {result['peak_gflops']:.0f} GFLOP/s peak (target >= 50%)")
    print("  cache-line round trip between cnnc's threads, before / after each round: "
          + ", ".join(round_trip(o) for o in ours))
    print("  spread over the rounds (min - max):")
    for row in rows:
        (c0, c1), (p0, p1) = row["cnnc_range"], row["pytorch_range"]
        print(f"  {row['label']:<30} cnnc {c0:.2f} - {c1:.2f}, PyTorch {p0:.2f} - {p1:.2f}")
    if args.profile:
        print_profile(result["cnnc_layers"], profile)


if __name__ == "__main__":
    main()

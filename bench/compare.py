#!/usr/bin/env python3
"""Side-by-side benchmark: cnnc against PyTorch on the seed model (CustomCNN), same machine.

`--model mobilenet_style` measures the depthwise-separable network of
models/mobilenet_style.yaml instead (grouped 3x3 convolutions, 1x1 ones, batchnorm2d), whose
PyTorch twin is written below.

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
        [--model custom_cnn|mobilenet_style]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("custom_cnn", "mobilenet_style")
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
    return custom_cnn(torch) if name == "custom_cnn" else mobilenet_style(torch)


def median_time(runs, fn):
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_round(torch, model, runs):
    """One round of the four timed workloads on PyTorch; same keys as `cnnc bench --format json`."""
    f = torch.nn.functional
    x64 = torch.rand(64, 3, 32, 32) * 2 - 1
    y64 = torch.arange(64) % 10
    x256 = torch.rand(256, 3, 32, 32) * 2 - 1
    x1 = torch.rand(1, 3, 32, 32) * 2 - 1
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def train():
        opt.zero_grad()
        f.cross_entropy(model(x64), y64).backward()
        opt.step()

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


def torch_memory_child(threads, name):
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
        x = torch.nn.functional.pad(data[idx].float() / 255, (2, 2, 2, 2)).expand(-1, 3, -1, -1)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), labels[idx]).backward()
        opt.step()
    print(f"{vm_hwm_mb():.1f}")


def torch_memory(threads, name):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--torch-memory-child", "--threads", str(threads),
         "--model", name],
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
    parser.add_argument("--torch-memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_memory_child:
        return torch_memory_child(args.threads, args.model)

    torch = import_torch()
    if not os.access(args.cnnc, os.X_OK):
        sys.exit(f"error: no cnnc executable at {args.cnnc}; build it with cargo build --release "
                 "or pass --cnnc PATH")
    torch.set_num_threads(args.threads)
    model = build_model(torch, args.model)
    spec = os.path.join(ROOT, "models", f"{args.model}.yaml")
    load_before = os.getloadavg()
    ours, theirs = [], []
    for r in range(args.rounds):
        ours.append(cnnc_round(args.cnnc, spec, args.threads, args.runs, memory=(r == 0)))
        theirs.append(torch_round(torch, model, args.runs))
        print(f"round {r + 1}/{args.rounds}: cnnc train {ours[-1]['train_images_per_s']:.0f} img/s, "
              f"PyTorch train {theirs[-1]['train_images_per_s']:.0f} img/s "
              f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    theirs[0]["peak_rss_mb"] = torch_memory(args.threads, args.model)
    load_after = os.getloadavg()

    rows = []
    for key, label, higher, target in WORKLOADS:
        ours_k = [o[key] for o in ours if o.get(key) is not None]
        theirs_k = [t[key] for t in theirs if t.get(key) is not None]
        a, b = statistics.median(ours_k), statistics.median(theirs_k)
        ratio = a / b
        met = ratio >= target if higher else ratio <= target
        # The spread over rounds: on a shared machine one side can change speed between rounds.
        rows.append({"workload": key, "label": label, "cnnc": a, "pytorch": b, "ratio": ratio,
                     "target": f"{'>=' if higher else '<='} {target}", "met": met,
                     "cnnc_range": [min(ours_k), max(ours_k)],
                     "pytorch_range": [min(theirs_k), max(theirs_k)]})
    pct = statistics.median(o["train_percent_of_peak"] for o in ours)
    result = {"model": args.model, "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__,
              "load_before": load_before, "load_after": load_after, "workloads": rows,
              "cnnc_train_percent_of_peak": pct,
              "peak_gflops": ours[0]["peak_gflops"]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.model}: cnnc vs PyTorch {torch.__version__}, {args.threads} threads, median of {args.rounds} "
          f"alternating rounds; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"  {'workload':<30} {'cnnc':>10} {'PyTorch':>10} {'ratio':>7} {'target':>8}")
    for row in rows:
        print(f"  {row['label']:<30} {row['cnnc']:>10.2f} {row['pytorch']:>10.2f} "
              f"{row['ratio']:>6.2f}x {row['target']:>8} {'met' if row['met'] else 'NOT met'}")
    print(f"  cnnc training step: {pct:.0f}% of a {result['peak_gflops']:.0f} GFLOP/s peak (target >= 50%)")
    print("  spread over the rounds (min - max):")
    for row in rows:
        (c0, c1), (p0, p1) = row["cnnc_range"], row["pytorch_range"]
        print(f"  {row['label']:<30} cnnc {c0:.2f} - {c1:.2f}, PyTorch {p0:.2f} - {p1:.2f}")


if __name__ == "__main__":
    main()

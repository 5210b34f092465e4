#!/usr/bin/env python3
"""Writes the PyTorch parity fixtures of the graph specs in models/ under tests/fixtures/graph/
(committed; cli/tests/graph_models.rs reads them, the test suite never runs PyTorch).

Regenerate, from the repository root, with the venv described in tools/README.md (plus
torchvision):

    tools/.venv/bin/python tools/make_graph_fixtures.py [MODEL ...]

Models (spec in models/NAME.yaml and models/NAME.cnn, PyTorch definition, input):

    resnet20_cifar  tools/resnet20_cifar.py ResNet20()                3x32x32  weights: pytorch
    se_resnet       tools/graph_examples.py SEResNet()                3x32x32  weights: pytorch
    unet            tools/graph_examples.py UNet()                    3x32x32  weights: pytorch
    resnet18        torchvision resnet18(num_classes=10)              3x64x64  weights: formula
    mobilenet_v2    torchvision mobilenet_v2(num_classes=10)          3x64x64  weights: formula
    squeezenet1_1   torchvision squeezenet1_1(num_classes=10)         3x65x65  weights: formula
    densenet121     torchvision densenet121(num_classes=10)           3x64x64  weights: formula

Weights. "pytorch": PyTorch's own initialisation (torch.manual_seed(0)), then one training-mode
forward pass on a batch of torch.randn so that BatchNorm's running statistics are not the defaults;
the state_dict is shipped as NAME_state_dict.safetensors, written by
`safetensors.torch.save_file(model.state_dict())` exactly as a PyTorch user saves it.
"formula": the state_dict is too big to ship, so every floating-point tensor is filled with a
formula the Rust test reproduces bit for bit, and only its names, dtypes and shapes are shipped:

    seed     = FNV-1a 64 of the state_dict key's UTF-8 bytes
               (offset 0xcbf29ce484222325, prime 0x100000001b3)
    h(k)     = SplitMix64's output for state seed + (k + 1) * 0x9e3779b97f4a7c15 (mod 2^64):
               z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
               z ^= z >> 31
    u(k)     = (h(k) >> 40) / 2^24, in [0, 1), exact in f32
    element k (row-major) of a tensor, all f32 arithmetic, each step rounded to nearest:
      key ends in `running_var`, or a 1-D `weight` (batchnorm's gamma):  0.5 + u(k)
      any other 1-D tensor (biases, running_mean):  (2 u(k) - 1) * 0.1
      conv and linear weights:   (2 u(k) - 1) * sqrt(gain2 / fan_in), fan_in = product of
                                 shape[1:], gain2 from the metadata `fill_gain2`: 1 (PyTorch's
                                 default bound) for the networks with BatchNorm, 6 (Kaiming's
                                 uniform bound for ReLU) for SqueezeNet, whose 26 layers without
                                 BatchNorm would shrink the signal to rounding noise otherwise
    The shifts are small so that no gradient drowns in rounding.
    int64 tensors (num_batches_tracked) keep PyTorch's 0.

The metadata `fill_check` holds, per filled tensor, sum over k of bits(element k) * (2k + 1)
mod 2^64 (decimal), so the test proves its reproduction bit-exact before comparing numbers.

Each NAME.safetensors holds:

- `input` [4,C,H,W] f32 (torch.manual_seed(1); randn), `labels` [4] int64 (randint(0, 10));
- `logits_eval`: model.eval() logits of `input`;
- `logits_train`, `loss`: model.train() logits and mean cross-entropy of (`input`, `labels`), with
  every dropout's p set to 0 (PyTorch's and cnnc's masks come from different generators);
- `logits_train_f32_error`: how far rounding moves `logits_train` (below);
- per parameter NAME, the gradient of that loss: `grad.NAME.stats` f64 [sum, sum of |g|, L2 norm,
  then how far rounding moves it: elementwise at most, its sum, its L2 norm], `grad.NAME.index`
  int64 [S] (S <= 16 element indices, row-major, spread over the tensor) and `grad.NAME.sample`
  f32 [S] (the gradient there);
- per BatchNorm buffer NAME (running_mean/var) after that training step: `after.NAME.stats`,
  `after.NAME.index`, `after.NAME.sample`, the same way.

How far rounding moves a number: its largest distance from the same model run in f64, over
PyTorch's f32 run and three f64 runs on the input perturbed by up to 1e-6 relative (about eight
f32 roundings, as rounding differences grow through a deep network; torch.rand, generator seeds
1, 2, 3). Most numbers are well conditioned and move by a few f32 roundings; some
are not, and any f32 implementation gets them only that far: a gradient that is mathematically
zero (a bias followed by a training-mode BatchNorm) holds rounding only, and a ReLU input that lies
a rounding away from 0 (DenseNet-121 has a few among its millions) switches a whole term of the
gradients behind it on or off.

Metadata: `state_dict` (JSON: [[key, dtype, shape], ...] in PyTorch's order), `params` (total
parameter count), `weights` ("pytorch" or "formula"), `fill_check` (formula only), `torch_version`,
`torchvision_version`, `script`, `recipe`. Single-threaded f32 on the CPU: a rerun with the same
versions rewrites identical bytes.
"""

import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save, save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from graph_examples import SEResNet, UNet  # noqa: E402
from resnet20_cifar import ResNet20  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "graph")
BATCH = 4
SAMPLES = 16
# f64 runs on inputs perturbed by up to 1e-6 relative, to measure each number's conditioning.
PERTURBED = 3

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15

MODELS = {
    "resnet20_cifar": (ResNet20, (3, 32, 32), "pytorch"),
    "se_resnet": (SEResNet, (3, 32, 32), "pytorch"),
    "unet": (UNet, (3, 32, 32), "pytorch"),
    "resnet18": (lambda: torchvision.models.resnet18(num_classes=10), (3, 64, 64), "formula 1"),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(num_classes=10), (3, 64, 64), "formula 1"),
    "squeezenet1_1": (lambda: torchvision.models.squeezenet1_1(num_classes=10), (3, 65, 65), "formula 6"),
    "densenet121": (lambda: torchvision.models.densenet121(num_classes=10), (3, 64, 64), "formula 1"),
}


def fnv1a(text):
    h = 0xCBF29CE484222325
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & M64
    return h


def uniform(seed, n):
    """u(k) for k in 0..n, f32 in [0, 1)."""
    with np.errstate(over="ignore"):
        k = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(seed) + k * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def formula(key, shape, gain2):
    n = int(np.prod(shape, dtype=np.int64))
    u = uniform(fnv1a(key), n)
    if key.endswith("running_var") or (key.endswith("weight") and len(shape) == 1):
        values = np.float32(0.5) + u
    elif len(shape) == 1:
        values = (np.float32(2.0) * u - np.float32(1.0)) * np.float32(0.1)
    else:
        fan_in = np.float32(np.prod(shape[1:], dtype=np.int64))
        scale = np.sqrt(np.float32(gain2) / fan_in)
        values = (np.float32(2.0) * u - np.float32(1.0)) * scale
    assert values.dtype == np.float32
    return values.reshape(shape)


def fill_check(values):
    """sum of bits(v_k) * (2k + 1) mod 2^64, as a decimal string."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    with np.errstate(over="ignore"):
        weights = np.arange(bits.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        return str(int(np.sum(bits * weights, dtype=np.uint64)))


def fill(model, gain2):
    """Overwrites every floating-point state_dict tensor with the formula; returns the checks."""
    checks = {}
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            values = formula(key, tuple(tensor.shape), gain2)
            tensor.copy_(torch.from_numpy(values))
            checks[key] = fill_check(values)
    return checks


def sample_indices(key, n):
    """Up to SAMPLES indices spread over 0..n, offset by the key's hash so that they do not all fall
    on the first element of a row."""
    if n <= SAMPLES:
        return np.arange(n, dtype=np.int64)
    stride = n // SAMPLES
    offset = fnv1a(key) % stride
    return np.array([k * stride + (offset + 7 * k) % stride for k in range(SAMPLES)], dtype=np.int64)


def summary(prefix, key, tensor, reference, others, out):
    """`tensor`'s summary. `reference` is the same tensor computed in f64, `others` more f64 runs
    on perturbed inputs: their distances from `reference` measure how well conditioned each
    number is."""
    flat = tensor.detach().reshape(-1)
    wide = flat.double()
    exact = reference.detach().reshape(-1)
    runs = [wide] + [o.detach().reshape(-1) for o in others]
    out[f"{prefix}.{key}.stats"] = torch.stack(
        [
            wide.sum(),
            wide.abs().sum(),
            wide.norm(),
            max((r - exact).abs().max() for r in runs),
            max((r.sum() - exact.sum()).abs() for r in runs),
            max((r.norm() - exact.norm()).abs() for r in runs),
        ]
    )
    index = sample_indices(key, flat.numel())
    out[f"{prefix}.{key}.index"] = torch.from_numpy(index)
    out[f"{prefix}.{key}.sample"] = flat[torch.from_numpy(index)].clone()


def write(path, tensors, metadata):
    """safetensors' save with the metadata keys sorted (it orders them by hash otherwise, and every
    regeneration would rewrite the committed bytes)."""
    raw = save({k: v.detach().clone().contiguous() for k, v in tensors.items()}, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n :])


DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def make(name):
    build, shape, weights = MODELS[name]
    torch.manual_seed(0)
    model = build()
    weights, _, gain2 = weights.partition(" ")
    meta = {"weights": weights}
    if weights == "formula":
        meta["fill_gain2"] = gain2
        meta["fill_check"] = json.dumps(fill(model, int(gain2)), separators=(",", ":"))
    else:
        # Running statistics that are not BatchNorm's defaults, from one batch.
        with torch.no_grad():
            model.train()
            model(torch.randn(BATCH, *shape))
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            os.path.join(OUT, f"{name}_state_dict.safetensors"),
        )
    state = model.state_dict()
    meta["state_dict"] = json.dumps(
        [[k, DTYPES[v.dtype], list(v.shape)] for k, v in state.items()], separators=(",", ":")
    )
    meta["params"] = str(sum(p.numel() for p in model.parameters()))

    torch.manual_seed(1)
    x = torch.randn(BATCH, *shape)
    y = torch.randint(0, 10, (BATCH,))
    tensors = {"input": x, "labels": y}

    model.eval()
    with torch.no_grad():
        tensors["logits_eval"] = model(x)
        reference = model.double()(x.double())
        model.float()
    drift = (tensors["logits_eval"].double() - reference).abs().max().item()

    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    wide = [copy.deepcopy(model).double() for _ in range(1 + PERTURBED)]
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    wide_logits = []
    for run, twin in enumerate(wide):
        xp = x.double()
        if run > 0:
            noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(run), dtype=torch.float64)
            xp = xp * (1 + (2 * noise - 1) * 1e-6)
        wide_logits.append(twin(xp))
        F.cross_entropy(wide_logits[-1], y).backward()
    tensors["logits_train"] = logits
    tensors["logits_train_f32_error"] = max(
        (other - wide_logits[0]).abs().max() for other in [logits.double()] + wide_logits[1:]
    )
    tensors["loss"] = loss
    params = [dict(twin.named_parameters()) for twin in wide]
    for key, p in model.named_parameters():
        summary("grad", key, p.grad, params[0][key].grad, [q[key].grad for q in params[1:]], tensors)
    buffers = [dict(twin.named_buffers()) for twin in wide]
    for key, b in model.named_buffers():
        if b.is_floating_point():
            summary("after", key, b, buffers[0][key], [q[key] for q in buffers[1:]], tensors)

    meta.update(
        torch_version=torch.__version__,
        torchvision_version=torchvision.__version__,
        script="tools/make_graph_fixtures.py",
        recipe=(
            f"torch.manual_seed(0); model = {name} ({weights} weights); torch.manual_seed(1); "
            f"input = randn({BATCH},{','.join(map(str, shape))}); labels = randint(0,10,({BATCH},)); "
            "logits_eval = model.eval()(input); model.train(), dropout p = 0; "
            "loss = cross_entropy(model(input), labels) (mean); backward"
        ),
    )
    write(os.path.join(OUT, f"{name}.safetensors"), tensors, meta)
    logit_scale = tensors["logits_eval"].abs().max().item()
    print(f"{name}: {meta['params']} params, |logits| <= {logit_scale:.3g}, f32 vs f64 {drift:.2g}, loss {loss.item():.4f}")


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    names = sys.argv[1:] or list(MODELS)
    for name in names:
        if name not in MODELS:
            sys.exit(f"unknown model {name!r}; one of: {', '.join(MODELS)}")
        make(name)


if __name__ == "__main__":
    main()

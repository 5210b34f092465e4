#!/usr/bin/env python3
"""Writes cnnc's PyTorch parity fixtures under tests/fixtures/ (committed; the test suite never runs
PyTorch).

Regenerate, from the repository root, with the venv described in tools/README.md:

    tools/.venv/bin/python tools/make_fixtures.py

Everything is f32 on the CPU, single-threaded and seeded, so a rerun with the same PyTorch version
rewrites identical files. Each file's metadata records the PyTorch version, the seed and how it was
made. Files written:

- custom_cnn.safetensors: the CustomCNN seed model (torch.manual_seed(0)): `state.<name>`, a batch
  (`input` [8,3,32,32], `labels` [8] int64), `logits`, `loss`, `grad.<name>`, and the weights after
  3 optimizer steps on that batch: `sgd.`, `sgd_nesterov_wd.`, `adam.`, `adamw.<name>`.
- custom_cnn_state_dict.safetensors: `save_file(model.state_dict())`, as a PyTorch user saves it.
- layers/<case>.safetensors: one layer with non-default options: `input`, `output`, `grad_output`,
  `grad_input`, `param.<name>`, `grad.<weight|bias>`, `after.<buffer>`; metadata `config` (JSON).
- optim.safetensors: optimizers in isolation on given gradients, and learning-rate schedules.
- npy/*.npy: small arrays written by numpy in the formats cnnc's .npy reader accepts or rejects.
- grads/<case>.cnn, grads/<case>_state_dict.safetensors, grads/<case>.safetensors: what
  `cnnc run --train --grads` is checked against: a spec, the weights PyTorch saves for the same
  module (buffers included), and `input`, `labels` (int64), then per mode (`train.`, `eval.`)
  `logits`, `loss` and `grad.<name>` of the mean cross-entropy loss.
- graph.safetensors: SmallGraph, a graph model (a residual block, a downsampling block with a 1x1
  projection shortcut, a channel concat and a squeeze-and-excitation gate) on 8x8 inputs:
  `state.<name>` (every state_dict entry, batchnorm statistics randomised), `input` [4,3,8,8],
  `labels`, `logits_eval`, then in train mode `logits`, `loss`, `grad.<name>` and `after.<buffer>`
  (running statistics after that forward); graph_state_dict.safetensors: its
  `save_file(model.state_dict())`.

Run with section names (`custom_cnn layers optim npy graph grads`) to write only those files.
"""

import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save, save_file
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from custom_cnn import CustomCNN  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures")
SEED = 0
BASE_META = {"torch_version": torch.__version__, "seed": str(SEED), "script": "tools/make_fixtures.py"}


def meta(**extra):
    return {**BASE_META, **{k: str(v) for k, v in extra.items()}}


def contiguous(tensors):
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}


def write(path, tensors, metadata):
    """save_file with the metadata keys sorted: safetensors orders them by hash, which would make
    every regeneration rewrite the committed bytes."""
    raw = save(contiguous(tensors), metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def train_steps(state, make_optimizer, x, y, steps=3):
    """Weights of a CustomCNN started from `state` after `steps` optimizer steps on one batch."""
    model = CustomCNN()
    model.load_state_dict(state)
    optimizer = make_optimizer(model.parameters())
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.state_dict()


def custom_cnn():
    torch.manual_seed(SEED)
    model = CustomCNN()
    state = contiguous(model.state_dict())
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()

    tensors = {"input": x, "labels": y, "logits": logits, "loss": loss}
    tensors.update({f"state.{k}": v for k, v in state.items()})
    tensors.update({f"grad.{k}": p.grad for k, p in model.named_parameters()})
    recipes = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.01, momentum=0.9, foreach=False),
        "sgd_nesterov_wd": lambda ps: torch.optim.SGD(
            ps, lr=0.01, momentum=0.9, dampening=0, nesterov=True, weight_decay=5e-4, foreach=False
        ),
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=False),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-2, foreach=False),
    }
    for prefix, make in recipes.items():
        after = train_steps(state, make, x, y)
        tensors.update({f"{prefix}.{k}": v for k, v in after.items()})
    recipe = (
        "torch.manual_seed(0); model = CustomCNN(); input = randn(8,3,32,32); labels = randint(0,10,(8,)); "
        "loss = cross_entropy(model(input), labels) (mean); sgd/sgd_nesterov_wd/adam/adamw = weights "
        "after 3 x (zero_grad, forward, backward, step) on that batch from state: "
        "SGD(lr=0.01, momentum=0.9); SGD(lr=0.01, momentum=0.9, dampening=0, nesterov=True, "
        "weight_decay=5e-4); Adam(lr=1e-3); AdamW(lr=1e-3, weight_decay=1e-2); all foreach=False"
    )
    write(os.path.join(OUT, "custom_cnn.safetensors"), tensors, meta(recipe=recipe))
    # Exactly what a PyTorch user writes, metadata included (none).
    save_file(state, os.path.join(OUT, "custom_cnn_state_dict.safetensors"))


def pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def layer_case(name, config, build, input_shape, *, scale=1.0, train=True, prepare=None):
    """Runs one layer forward and backward and writes layers/<name>.safetensors."""
    torch.manual_seed(SEED)
    module = build()
    if prepare is not None:
        with torch.no_grad():
            prepare(module)
    module.train(train)
    x = (torch.randn(*input_shape) * scale).requires_grad_(True)
    params = {f"param.{k}": v.detach().clone() for k, v in module.state_dict().items()}
    out = module(x)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    tensors = {"input": x, "output": out, "grad_output": grad_out, "grad_input": x.grad, **params}
    tensors.update({f"grad.{k}": p.grad for k, p in module.named_parameters()})
    if train:
        tensors.update({f"after.{k}": v for k, v in module.named_buffers()})
    write(os.path.join(OUT, "layers", f"{name}.safetensors"), tensors, meta(config=json.dumps(config)))


def conv(
    name,
    in_channels,
    out_channels,
    kernel_size,
    input_hw,
    stride=1,
    padding=0,
    dilation=1,
    bias=True,
    groups=1,
    padding_mode="zeros",
):
    config = {
        "kind": "Conv2d",
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kernel_size": pair(kernel_size),
        "stride": pair(stride),
        "padding": pair(padding),
        "dilation": pair(dilation),
        "bias": bias,
    }
    if padding == "same":
        # PyTorch's own choice of pixels: [left, right, top, bottom], the odd one after the input.
        probe = nn.Conv2d(1, 1, kernel_size, dilation=dilation, padding="same")
        left, right, top, bottom = probe._reversed_padding_repeated_twice
        config["padding"] = [top, left]
        config["padding_end"] = [bottom, right]
    if groups != 1:
        config["groups"] = groups
    if padding_mode != "zeros":
        config["padding_mode"] = padding_mode
    build = lambda: nn.Conv2d(  # noqa: E731
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        bias=bias,
        groups=groups,
        padding_mode=padding_mode,
    )
    layer_case(name, config, build, (2, in_channels, *input_hw))


def pool(name, kind, kernel_size, input_hw, stride=None, padding=0, ceil_mode=False, **options):
    """A max or average pool; `options` are dilation (max) or count_include_pad and
    divisor_override (avg)."""
    stride = kernel_size if stride is None else stride
    config = {
        "kind": kind,
        "kernel_size": pair(kernel_size),
        "stride": pair(stride),
        "padding": pair(padding),
        "ceil_mode": ceil_mode,
    }
    cls = nn.MaxPool2d if kind == "MaxPool2d" else nn.AvgPool2d
    if kind == "AvgPool2d":
        config["count_include_pad"] = options.get("count_include_pad", True)
        if options.get("divisor_override") is not None:
            config["divisor_override"] = options["divisor_override"]
    elif "dilation" in options:
        config["dilation"] = pair(options["dilation"])
    build = lambda: cls(kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode, **options)  # noqa: E731
    layer_case(name, config, build, (2, 3, *input_hw))


def batchnorm(name, training, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
    config = {"kind": "BatchNorm2d", "num_features": 3, "eps": eps, "momentum": momentum, "training": training}
    if not affine:
        config["affine"] = False
    if not track_running_stats:
        config["track_running_stats"] = False

    def prepare(bn):
        # Non-default affine parameters and running statistics, so that none of them is a no-op.
        if affine:
            bn.weight.copy_(torch.randn(3))
            bn.bias.copy_(torch.randn(3))
        if track_running_stats:
            bn.running_mean.copy_(torch.randn(3))
            bn.running_var.copy_(torch.rand(3) + 0.5)
            bn.num_batches_tracked.fill_(2)

    build = lambda: nn.BatchNorm2d(  # noqa: E731
        3, eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats
    )
    layer_case(name, config, build, (4, 3, 5, 4), scale=2.0, train=training, prepare=prepare)


def groupnorm(name, num_groups, num_channels, input_hw, eps=1e-5, affine=True, training=True):
    config = {"kind": "GroupNorm", "num_groups": num_groups, "num_channels": num_channels, "eps": eps, "affine": affine}

    def prepare(gn):
        if affine:
            gn.weight.copy_(torch.randn(num_channels))
            gn.bias.copy_(torch.randn(num_channels))

    build = lambda: nn.GroupNorm(num_groups, num_channels, eps=eps, affine=affine)  # noqa: E731
    layer_case(name, config, build, (3, num_channels, *input_hw), scale=2.0, train=training, prepare=prepare)


def cross_entropy():
    torch.manual_seed(SEED)
    logits = (torch.randn(6, 5) * 3).requires_grad_(True)
    labels = torch.randint(0, 5, (6,))
    loss = F.cross_entropy(logits, labels)
    grad_out = torch.rand(()) + 0.5
    loss.backward(grad_out)
    tensors = {"input": logits, "labels": labels, "output": loss, "grad_output": grad_out, "grad_input": logits.grad}
    config = {"kind": "CrossEntropyLoss", "reduction": "mean"}
    write(os.path.join(OUT, "layers", "cross_entropy.safetensors"), tensors, meta(config=json.dumps(config)))


def layers():
    os.makedirs(os.path.join(OUT, "layers"), exist_ok=True)
    conv("conv2d_basic", 3, 4, 3, (7, 8), padding=1)
    conv("conv2d_stride2", 3, 4, 3, (9, 8), stride=2, padding=1)
    conv("conv2d_padding_1_2", 3, 4, 3, (7, 8), padding=(1, 2))
    conv("conv2d_dilation2", 3, 4, 3, (9, 8), padding=2, dilation=2)
    conv("conv2d_rect_kernel", 3, 4, (3, 5), (7, 8), padding=(1, 2))
    conv("conv2d_no_bias", 3, 4, 3, (7, 8), padding=1, bias=False)
    conv("conv2d_mixed", 3, 5, (3, 2), (9, 10), stride=(2, 3), padding=(1, 2), dilation=(2, 1))
    # Grouped and depthwise (groups = in_channels), with a channel multiplier, strides, dilation
    # and more channels than one AVX-512 vector.
    conv("conv2d_depthwise", 4, 4, 3, (7, 8), padding=1, groups=4)
    conv("conv2d_depthwise_wide", 20, 20, 3, (6, 5), padding=1, groups=20)
    conv("conv2d_depthwise_mult2_stride2", 3, 6, 3, (9, 8), stride=2, padding=1, groups=3)
    conv("conv2d_depthwise_dilated", 5, 5, 3, (9, 10), stride=(1, 2), padding=2, dilation=2, groups=5, bias=False)
    conv("conv2d_groups2", 4, 6, (3, 2), (7, 8), padding=(1, 0), dilation=(1, 2), groups=2)
    # Padding modes, at their limits: reflect up to size - 1, circular up to the size.
    conv("conv2d_reflect", 3, 4, 3, (7, 8), padding=(1, 2), padding_mode="reflect")
    conv("conv2d_reflect_max", 2, 3, (5, 3), (4, 3), padding=(3, 2), padding_mode="reflect")
    conv("conv2d_replicate", 3, 4, 3, (5, 6), stride=2, padding=(2, 3), padding_mode="replicate")
    conv("conv2d_circular", 3, 4, (3, 5), (4, 5), padding=(2, 5), dilation=(2, 1), padding_mode="circular")
    conv("conv2d_depthwise_reflect", 4, 4, 3, (6, 5), padding=1, groups=4, padding_mode="reflect")
    # padding='same' whose total dilation * (kernel_size - 1) is odd: one more pixel after the input.
    conv("conv2d_same_k2", 3, 4, 2, (7, 8), padding="same")
    conv("conv2d_same_k4", 3, 4, 4, (7, 8), padding="same", bias=False)
    conv("conv2d_same_rect_dilated", 3, 5, (4, 3), (9, 8), padding="same", dilation=(1, 2))
    conv("conv2d_same_k2_dilation3", 2, 3, 2, (8, 7), padding="same", dilation=3)
    conv("conv2d_same_groups", 4, 6, (2, 4), (7, 8), padding="same", groups=2)
    conv("conv2d_same_depthwise", 4, 4, 4, (6, 7), padding="same", groups=4)
    conv("conv2d_same_reflect", 3, 4, 4, (5, 6), padding="same", padding_mode="reflect")
    conv("conv2d_same_circular", 3, 4, (2, 4), (4, 5), padding="same", dilation=(3, 1), padding_mode="circular")
    conv("conv2d_same_replicate_depthwise", 3, 3, 2, (5, 4), padding="same", groups=3, padding_mode="replicate")
    for kind, prefix in (("MaxPool2d", "max_pool2d"), ("AvgPool2d", "avg_pool2d")):
        pool(f"{prefix}_k2", kind, 2, (6, 8))
        pool(f"{prefix}_pad_ceil", kind, 3, (6, 5), stride=2, padding=1, ceil_mode=True)
        # Height 5 with kernel 2, stride 2, padding 1 and ceil_mode: the last window would start in
        # the right padding, so PyTorch drops it (3 rows, not 4); width 6 keeps all 4 columns.
        pool(f"{prefix}_ceil_drop", kind, 2, (5, 6), stride=2, padding=1, ceil_mode=True)
        pool(f"{prefix}_stride1_rect", kind, (2, 3), (5, 6), stride=1, padding=(1, 1))
    # Dilated max pools: overlapping, with padding and ceil_mode, and disjoint with gaps.
    pool("max_pool2d_dilation2", "MaxPool2d", 3, (9, 8), stride=1, padding=1, dilation=2)
    pool("max_pool2d_dilation_mixed_ceil", "MaxPool2d", (2, 3), (8, 9), stride=(2, 1), padding=1, dilation=(3, 2),
         ceil_mode=True)
    pool("max_pool2d_dilation_disjoint", "MaxPool2d", 2, (8, 8), stride=4, dilation=2)
    # Average pools dividing by the input pixels only, and by a fixed divisor.
    pool("avg_pool2d_exclude_pad", "AvgPool2d", 3, (6, 5), stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    pool("avg_pool2d_divisor", "AvgPool2d", (2, 3), (5, 6), stride=1, padding=1, divisor_override=5)
    pool("avg_pool2d_divisor_exclude_pad", "AvgPool2d", 2, (5, 5), stride=2, padding=1, count_include_pad=False,
         divisor_override=3)
    layer_case("relu", {"kind": "ReLU"}, nn.ReLU, (2, 3, 4, 5))
    layer_case(
        "leaky_relu", {"kind": "LeakyReLU", "negative_slope": 0.2}, lambda: nn.LeakyReLU(0.2), (2, 3, 4, 5)
    )
    layer_case("sigmoid", {"kind": "Sigmoid"}, nn.Sigmoid, (2, 3, 4, 5), scale=4.0)
    layer_case("tanh", {"kind": "Tanh"}, nn.Tanh, (2, 3, 4, 5), scale=3.0)
    layer_case("flatten", {"kind": "Flatten", "start_dim": 1, "end_dim": -1}, nn.Flatten, (2, 3, 4, 5))
    linear_config = {"kind": "Linear", "in_features": 6, "out_features": 5}
    layer_case("linear", {**linear_config, "bias": True}, lambda: nn.Linear(6, 5), (4, 6))
    layer_case("linear_no_bias", {**linear_config, "bias": False}, lambda: nn.Linear(6, 5, bias=False), (4, 6))
    batchnorm("batch_norm2d_train", True)
    batchnorm("batch_norm2d_train_momentum", True, eps=1e-3, momentum=0.3)
    batchnorm("batch_norm2d_eval", False)
    # momentum=None: the cumulative average, factor 1 / num_batches_tracked (3 after this step).
    batchnorm("batch_norm2d_cumulative", True, momentum=None)
    batchnorm("batch_norm2d_no_affine", True, affine=False)
    # Without running statistics, eval normalises by the batch's (and has no buffers).
    batchnorm("batch_norm2d_untracked_eval", False, track_running_stats=False)
    batchnorm("batch_norm2d_untracked_train", True, affine=False, track_running_stats=False)
    groupnorm("group_norm_2_of_6", 2, 6, (4, 5))
    groupnorm("group_norm_instance", 4, 4, (3, 3), eps=1e-3)
    groupnorm("group_norm_layer", 1, 3, (5, 2), training=False)
    groupnorm("group_norm_no_affine", 3, 6, (2, 3), affine=False)
    # One dim flattened: nothing changes, as in PyTorch.
    layer_case("flatten_dim2", {"kind": "Flatten", "start_dim": 2, "end_dim": 2}, lambda: nn.Flatten(2, 2), (2, 3, 4, 5))
    # Modern activations: scale 4 puts inputs on both sides of every kink (-3, 0, 3, 6).
    layer_case("relu6", {"kind": "ReLU6"}, nn.ReLU6, (2, 3, 4, 5), scale=4.0)
    layer_case("silu", {"kind": "SiLU"}, nn.SiLU, (2, 3, 4, 5), scale=4.0)
    layer_case("gelu", {"kind": "GELU", "approximate": "none"}, nn.GELU, (2, 3, 4, 5), scale=3.0)
    layer_case("hardswish", {"kind": "Hardswish"}, nn.Hardswish, (2, 3, 4, 5), scale=4.0)
    layer_case("hardsigmoid", {"kind": "Hardsigmoid"}, nn.Hardsigmoid, (2, 3, 4, 5), scale=4.0)
    layer_case("elu", {"kind": "ELU", "alpha": 0.7}, lambda: nn.ELU(0.7), (2, 3, 4, 5), scale=3.0)
    layer_case("identity", {"kind": "Identity"}, nn.Identity, (2, 3, 4, 5))
    layer_case("gelu_flat", {"kind": "GELU", "approximate": "none"}, nn.GELU, (4, 7), scale=3.0)
    # Scale 2: past |x| = 5 the tanh form's gradient (~1e-6) is below f32's resolution of
    # 1 - tanh^2, where PyTorch's vectorised tanh rounds to 1 and gives exactly 0.
    layer_case(
        "gelu_tanh", {"kind": "GELU", "approximate": "tanh"}, lambda: nn.GELU(approximate="tanh"), (2, 3, 4, 5), scale=2.0
    )
    # PReLU: one shared slope, one per channel (random, so each channel's is checked), one per
    # feature of a flat input.
    def random_slopes(m):
        m.weight.uniform_(-0.5, 0.5)

    layer_case("prelu", {"kind": "PReLU", "num_parameters": 1}, nn.PReLU, (2, 3, 4, 5))
    layer_case(
        "prelu_channels", {"kind": "PReLU", "num_parameters": 3}, lambda: nn.PReLU(3), (2, 3, 4, 5), prepare=random_slopes
    )
    layer_case("prelu_flat", {"kind": "PReLU", "num_parameters": 7}, lambda: nn.PReLU(7), (4, 7), prepare=random_slopes)
    # Softmax along each dimension cnnc accepts (channels, height, width, features), negative too.
    for cls, prefix in ((nn.Softmax, "softmax"), (nn.LogSoftmax, "log_softmax")):
        kind = cls.__name__
        for dim in (1, 2, -1):
            suffix = f"m{-dim}" if dim < 0 else str(dim)
            layer_case(f"{prefix}_dim{suffix}", {"kind": kind, "dim": dim}, lambda: cls(dim=dim), (2, 3, 4, 5), scale=3.0)
        layer_case(f"{prefix}_flat", {"kind": kind, "dim": -1}, lambda: cls(dim=-1), (4, 7), scale=3.0)
    cross_entropy()
    resample_cases()
    conv_transpose("conv_transpose2d_basic", 3, 4, 3, (4, 5))
    conv_transpose("conv_transpose2d_stride2_outpad", 3, 4, 3, (4, 5), stride=2, padding=1, output_padding=1)
    conv_transpose(
        "conv_transpose2d_mixed", 3, 5, (3, 2), (4, 3), stride=(2, 3), padding=(1, 2), output_padding=(0, 1),
        dilation=(2, 1),
    )
    conv_transpose("conv_transpose2d_no_bias", 3, 2, 4, (3, 3), stride=2, padding=1, bias=False)
    conv_transpose("conv_transpose2d_groups", 4, 6, 3, (4, 5), stride=2, padding=1, output_padding=1, groups=2)
    conv_transpose("conv_transpose2d_depthwise", 3, 3, (3, 2), (4, 3), stride=(1, 2), dilation=(2, 1), groups=3,
                   bias=False)


def conv_transpose(name, in_channels, out_channels, kernel_size, input_hw, stride=1, padding=0, output_padding=0,
                   dilation=1, bias=True, groups=1):
    config = {
        "kind": "ConvTranspose2d",
        "in_channels": in_channels,
        "out_channels": out_channels,
        "kernel_size": pair(kernel_size),
        "stride": pair(stride),
        "padding": pair(padding),
        "output_padding": pair(output_padding),
        "groups": groups,
        "dilation": pair(dilation),
        "bias": bias,
    }
    build = lambda: nn.ConvTranspose2d(  # noqa: E731
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, output_padding=output_padding,
        groups=groups, bias=bias, dilation=dilation,
    )
    layer_case(name, config, build, (2, in_channels, *input_hw))


def resample_cases():
    """Adaptive pooling (non-divisible, global and growing sizes) and nearest upsampling."""
    for kind, cls, prefix in (
        ("AdaptiveAvgPool2d", nn.AdaptiveAvgPool2d, "adaptive_avg_pool2d"),
        ("AdaptiveMaxPool2d", nn.AdaptiveMaxPool2d, "adaptive_max_pool2d"),
    ):
        for suffix, size, input_hw in (("5x7_to_3x2", (3, 2), (5, 7)), ("global", (1, 1), (4, 6)), ("grow", (5, 4), (3, 2))):
            config = {"kind": kind, "output_size": list(size)}
            layer_case(f"{prefix}_{suffix}", config, lambda cls=cls, size=size: cls(size), (2, 3, *input_hw))
    for suffix, factor, input_hw in (("2", (2, 2), (3, 4)), ("3x1", (3, 1), (3, 4)), ("7x5", (7, 5), (2, 3))):
        config = {"kind": "Upsample", "mode": "nearest", "scale_factor": list(factor)}
        build = lambda factor=factor: nn.Upsample(scale_factor=tuple(float(f) for f in factor), mode="nearest")  # noqa: E731
        layer_case(f"upsample_nearest_{suffix}", config, build, (2, 3, *input_hw))
    # By size: non-integer ratios growing and shrinking; bilinear by size and by factor, with and
    # without align_corners (None meaning False).
    for suffix, mode, size, factor, align, input_hw in (
        ("nearest_size_7x5", "nearest", (7, 5), None, None, (3, 4)),
        ("nearest_size_shrink", "nearest", (2, 3), None, None, (5, 7)),
        ("bilinear_size", "bilinear", (7, 9), None, None, (3, 4)),
        ("bilinear_size_align", "bilinear", (7, 9), None, True, (3, 4)),
        ("bilinear_2", "bilinear", None, (2, 2), False, (3, 4)),
        ("bilinear_3x2_align", "bilinear", None, (3, 2), True, (3, 4)),
        ("bilinear_shrink", "bilinear", (2, 3), None, None, (5, 7)),
        ("bilinear_one_pixel_align", "bilinear", (4, 1), None, True, (1, 3)),
    ):
        config = {"kind": "Upsample", "mode": mode, "size": size and list(size),
                  "scale_factor": factor and list(factor), "align_corners": align}
        build = lambda mode=mode, size=size, factor=factor, align=align: nn.Upsample(  # noqa: E731
            size=size, scale_factor=factor and tuple(float(f) for f in factor), mode=mode, align_corners=align
        )
        layer_case(f"upsample_{suffix}", config, build, (2, 3, *input_hw))


# Every optimizer configuration of optim.safetensors, with torch.optim's argument names.
OPTIMIZERS = {
    "sgd": ("SGD", {"lr": 0.1}),
    "sgd_momentum": ("SGD", {"lr": 0.1, "momentum": 0.9}),
    "sgd_dampening": ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    "sgd_nesterov": ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    "sgd_weight_decay": ("SGD", {"lr": 0.1, "weight_decay": 0.01}),
    "sgd_nesterov_wd": ("SGD", {"lr": 0.01, "momentum": 0.9, "dampening": 0.0, "nesterov": True, "weight_decay": 5e-4}),
    "sgd_all": ("SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.02}),
    "adam": ("Adam", {"lr": 1e-3}),
    "adam_custom": ("Adam", {"lr": 0.01, "betas": [0.8, 0.9], "eps": 1e-6, "weight_decay": 0.05}),
    "adam_amsgrad": ("Adam", {"lr": 0.01, "betas": [0.8, 0.9], "amsgrad": True}),
    "adam_low_beta1": ("Adam", {"lr": 0.01, "betas": [0.3, 0.6]}),
    "adamw": ("AdamW", {"lr": 1e-3, "weight_decay": 1e-2}),
    "adamw_amsgrad": ("AdamW", {"lr": 0.01, "betas": [0.8, 0.9], "weight_decay": 0.1, "amsgrad": True}),
}

# Learning-rate schedules: name -> (class, arguments, base lr, epochs).
SCHEDULES = {
    "step": ("StepLR", {"step_size": 3, "gamma": 0.5}, 0.1, 12),
    "cosine": ("CosineAnnealingLR", {"T_max": 10, "eta_min": 0.001}, 0.1, 25),
}


def optim():
    """Optimizers in isolation: params `param.<p>`, gradients `grad.<step>.<p>` for steps 1..3,
    `<config>.<step>.<p>` the params after each step, `<config>.state.<p>.<slot>` torch's optimizer
    state after step 3; schedules: `schedule.<name>` f64 [epochs], the lr torch reports per epoch."""
    torch.manual_seed(SEED)
    # 40 elements: PyTorch's CPU kernels run vectorised over the first 32 and scalar over the rest.
    params = {"w": torch.randn(8, 5), "b": torch.randn(5)}
    # Step 2's gradient is small so that AMSGrad's running maximum differs from exp_avg_sq.
    grads = [{k: torch.randn_like(v) * s for k, v in params.items()} for s in (1.0, 0.1, 2.0)]
    tensors = {f"param.{k}": v for k, v in params.items()}
    for step, g in enumerate(grads, start=1):
        tensors.update({f"grad.{step}.{k}": v for k, v in g.items()})
    for name, (cls, kwargs) in OPTIMIZERS.items():
        ps = {k: nn.Parameter(v.clone()) for k, v in params.items()}
        args = {**kwargs, "betas": tuple(kwargs["betas"])} if "betas" in kwargs else kwargs
        optimizer = getattr(torch.optim, cls)(list(ps.values()), foreach=False, **args)
        for step, g in enumerate(grads, start=1):
            for k, p in ps.items():
                p.grad = g[k].clone()
            optimizer.step()
            tensors.update({f"{name}.{step}.{k}": p.detach().clone() for k, p in ps.items()})
        for k, p in ps.items():
            for slot, value in optimizer.state[p].items():
                if slot != "step":
                    tensors[f"{name}.state.{k}.{slot}"] = value.clone()
    for name, (cls, kwargs, base_lr, epochs) in SCHEDULES.items():
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
        scheduler = getattr(torch.optim.lr_scheduler, cls)(optimizer, **kwargs)
        lrs = []
        for _ in range(epochs):
            lrs.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        tensors[f"schedule.{name}"] = torch.tensor(lrs, dtype=torch.float64)
    optimizers = {k: {"optimizer": cls, **kwargs} for k, (cls, kwargs) in OPTIMIZERS.items()}
    schedules = {
        k: {"scheduler": cls, "base_lr": lr, "epochs": n, **kwargs} for k, (cls, kwargs, lr, n) in SCHEDULES.items()
    }
    write(os.path.join(OUT, "optim.safetensors"), tensors, meta(optimizers=json.dumps(optimizers), schedules=json.dumps(schedules)))


def npy():
    """Small .npy files: the formats the reader must accept, and some it must reject or convert."""
    d = os.path.join(OUT, "npy")
    os.makedirs(d, exist_ok=True)
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 8 - 1
    np.save(os.path.join(d, "f32_c.npy"), a)
    np.save(os.path.join(d, "f32_fortran.npy"), np.asfortranarray(a))
    np.save(os.path.join(d, "f32_scalar.npy"), np.float32(2.5))
    np.save(os.path.join(d, "f32_empty.npy"), np.zeros((0, 3), dtype=np.float32))
    np.save(os.path.join(d, "f32_big_endian.npy"), a.astype(">f4"))
    np.save(os.path.join(d, "f64.npy"), np.array([[0.5, -1.25, 1e-3]], dtype=np.float64))
    np.save(os.path.join(d, "i64.npy"), np.array([[3, -7], [0, 16777216]], dtype=np.int64))
    np.save(os.path.join(d, "i64_inexact.npy"), np.array([16777217], dtype=np.int64))
    np.save(os.path.join(d, "u8.npy"), np.array([0, 1, 255], dtype=np.uint8))
    np.save(os.path.join(d, "complex64.npy"), np.array([1 + 2j], dtype=np.complex64))
    for version in ((2, 0), (3, 0)):
        with open(os.path.join(d, f"f32_v{version[0]}.npy"), "wb") as f:
            np.lib.format.write_array(f, a, version=version)


class BnCnn(nn.Module):
    """A small sequential CNN with batch norm (so train and eval mode differ) and a fused pool."""

    SPEC = """model BnCnn
input (3, 12, 12)
conv1: conv2d(out_channels=8, kernel_size=3, padding=1, bias=false)
bn1: batchnorm2d
relu
maxpool2d(kernel_size=2)
conv2: conv2d(out_channels=6, kernel_size=3, stride=2)
bn2: batchnorm2d
relu
flatten
fc: linear(out_features=5)
"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class SameCnn(nn.Module):
    """padding='same' with odd totals (the extra pixel on the bottom and right): a dense even
    kernel before batch norm, a depthwise 4x4 and a dilated, reflect-padded rectangular one."""

    SPEC = """model SameCnn
input (3, 9, 10)
conv1: conv2d(out_channels=8, kernel_size=2, padding=same, bias=false)
bn1: batchnorm2d
relu
dw: conv2d(out_channels=8, kernel_size=4, padding=same, groups=8)
pw: conv2d(out_channels=6, kernel_size=(2, 4), dilation=(3, 1), padding=same, padding_mode=reflect)
relu
flatten
fc: linear(out_features=5)
"""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 2, padding="same", bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 4, padding="same", groups=8)
        self.pw = nn.Conv2d(8, 6, (2, 4), dilation=(3, 1), padding="same", padding_mode="reflect")
        self.fc = nn.Linear(6 * 9 * 10, 5)

    def forward(self, x):
        x = self.dw(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.pw(x))
        return self.fc(torch.flatten(x, 1))


def grads_case(name, model, input_shape, classes, batch=6):
    """Gradients of the mean cross-entropy loss with respect to every parameter, in train and in
    eval mode, from the same weights (batch-norm running statistics made non-trivial first)."""
    d = os.path.join(OUT, "grads")
    os.makedirs(d, exist_ok=True)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(batch, *input_shape) * 2 + 0.5)
    state = contiguous(model.state_dict())
    x = torch.randn(batch, *input_shape)
    y = torch.randint(0, classes, (batch,))
    tensors = {"input": x, "labels": y}
    for mode in ("train", "eval"):
        model.load_state_dict(state)
        model.train(mode == "train")
        model.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        tensors.update({f"{mode}.logits": logits, f"{mode}.loss": loss})
        tensors.update({f"{mode}.grad.{k}": p.grad for k, p in model.named_parameters()})
    recipe = (
        f"torch.manual_seed(0); model = {type(model).__name__}(); two no_grad train-mode forwards on "
        f"randn({batch},*input)*2+0.5 (running statistics); state = state_dict(); input = "
        f"randn({batch},*input); labels = randint(0,{classes},({batch},)); per mode (model.train() / "
        "model.eval()): logits, loss = cross_entropy(logits, labels) (mean), grad = p.grad"
    )
    write(os.path.join(d, f"{name}.safetensors"), tensors, meta(recipe=recipe))
    save_file(state, os.path.join(d, f"{name}_state_dict.safetensors"))
    with open(os.path.join(d, f"{name}.cnn"), "w") as f:
        f.write(f"# Made by tools/make_fixtures.py: the spec of its {type(model).__name__}.\n")
        f.write(model.SPEC)


def grads():
    torch.manual_seed(SEED)
    grads_case("bn_cnn", BnCnn(), (3, 12, 12), 5)
    torch.manual_seed(SEED)
    grads_case("same_cnn", SameCnn(), (3, 9, 10), 5)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv-bn-relu-conv-bn, plus the input (or its projection)."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class SqueezeExcitation(nn.Module):
    """torchvision's SqueezeExcitation: a per-channel gate from the pooled map, `scale * input`."""

    def __init__(self, channels, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        scale = self.sigmoid(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return scale * x


class SmallGraph(nn.Module):
    """The graph of runtime/tests/parity_graph.rs: stem, a residual block, a downsampling block,
    a 1x1 side branch concatenated with it, an SE gate, pooling and a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.block = BasicBlock(8, 8)
        self.down = BasicBlock(8, 16, stride=2)
        self.side = nn.Conv2d(8, 8, 1, stride=2)
        self.se = SqueezeExcitation(24, 6)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = self.block(self.relu(self.bn1(self.conv1(x))))
        x = torch.cat([self.down(x), self.side(x)], 1)
        x = self.avgpool(self.se(x))
        return self.fc(torch.flatten(x, 1))


def graph():
    torch.manual_seed(SEED)
    model = SmallGraph()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(3)
    state = contiguous(model.state_dict())
    x = torch.randn(4, 3, 8, 8)
    y = torch.randint(0, 10, (4,))
    model.eval()
    with torch.no_grad():
        logits_eval = model(x)
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    tensors = {"input": x, "labels": y, "logits_eval": logits_eval, "logits": logits, "loss": loss}
    tensors.update({f"state.{k}": v for k, v in state.items()})
    tensors.update({f"grad.{k}": p.grad for k, p in model.named_parameters()})
    tensors.update({f"after.{k}": v for k, v in model.state_dict().items() if "running" in k})
    recipe = (
        "torch.manual_seed(0); model = SmallGraph(); batchnorm weight U(0.5,1.5), bias U(-0.5,0.5), "
        "running_mean U(-0.5,0.5), running_var U(0.5,1.5), num_batches_tracked 3; "
        "input = randn(4,3,8,8); labels = randint(0,10,(4,)); logits_eval in eval mode; "
        "then in train mode logits, loss = cross_entropy (mean), grads, running stats after"
    )
    write(os.path.join(OUT, "graph.safetensors"), tensors, meta(recipe=recipe))
    # Exactly what a PyTorch user writes: the composed names (`down.downsample.0.weight`).
    save_file(state, os.path.join(OUT, "graph_state_dict.safetensors"))


SECTIONS = {
    "custom_cnn": custom_cnn,
    "layers": layers,
    "optim": optim,
    "npy": npy,
    "graph": graph,
    "grads": grads,
}


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    chosen = sys.argv[1:] or list(SECTIONS)
    unknown = [c for c in chosen if c not in SECTIONS]
    if unknown:
        sys.exit(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    for name in chosen:
        SECTIONS[name]()
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT} ({total / 1e6:.2f} MB) with torch {torch.__version__}")


if __name__ == "__main__":
    main()

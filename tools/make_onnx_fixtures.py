"""Writes interop/tests/torch/: two small PyTorch modules exported by torch.onnx.export with both
exporters, for `cargo test -p cnnc-interop --test onnx_import` to import and run. `Patterns` is
built from the layers whose ONNX form is a pattern of several nodes (padding modes as a Pad
before the Conv, group norm with and without affine, both GELUs, a zero pad before a
convolution); `Resizes` from every form of nn.Upsample / F.interpolate cnnc imports (nearest and
bilinear, scale_factor and size, align_corners true and false, an output of one row).

    tools/.venv/bin/python tools/make_onnx_fixtures.py

Written with torch 2.15.0, onnx 1.23.2, onnxscript 0.7.2 (the dynamo exporter's translator).
Files: patterns_<exporter>.onnx; patterns.logits, the module's logits (little-endian f32,
[2, 5]) on the batch x[n, c, y, x] = ((n*31 + c*17 + y*7 + x*3) % 23) / 11 - 1 of shape
[2, 3, 6, 5]; patterns.keys, its state_dict names. resizes_<exporter>_opset<N>.onnx (legacy
at opsets 17 and 20, dynamo at 18 and 20) and resizes.logits ([2, 4]) on the same batch.
"""

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

OUT = Path(__file__).resolve().parent.parent / "interop" / "tests" / "torch"


class Patterns(nn.Module):
    def __init__(self):
        super().__init__()
        self.reflect = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")  # 4x6x5
        self.gn = nn.GroupNorm(2, 4)
        self.act1 = nn.GELU()
        self.replicate = nn.Conv2d(4, 4, 3, padding=(1, 2), padding_mode="replicate")  # 4x6x7
        self.gn_plain = nn.GroupNorm(4, 4, affine=False)
        self.act2 = nn.GELU(approximate="tanh")
        self.pad = nn.ZeroPad2d(1)
        self.conv = nn.Conv2d(4, 2, 3, padding=1)  # 2x8x9
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * 8 * 9, 5)

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


class Resizes(nn.Module):
    """Every resize cnnc imports, between small convolutions (the sizes in comments)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 2, 3, padding=1)  # 2x6x5
        self.up = nn.Upsample(scale_factor=(2, 3), mode="bilinear")  # 2x12x15: half_pixel, scales
        self.mix = nn.Conv2d(2, 2, 3, stride=2)  # 2x5x7
        self.fc = nn.Linear(2 * 3 * 3, 4)

    def forward(self, x):
        x = self.up(self.stem(x))
        x = F.interpolate(x, size=(7, 9), mode="bilinear", align_corners=True)  # align_corners, sizes
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)  # 2x14x18
        x = self.mix(x)  # 2x6x8
        x = F.interpolate(x, size=(5, 11), mode="bilinear", align_corners=False)  # half_pixel, sizes
        x = F.interpolate(x, scale_factor=2, mode="nearest")  # 2x10x22
        x = F.interpolate(x, size=(6, 3), mode="nearest")  # asymmetric floor, sizes
        x = F.interpolate(x, size=(1, 3), mode="bilinear")  # one row: half_pixel
        x = F.interpolate(x, size=(3, 3), mode="bilinear", align_corners=True)
        return self.fc(torch.flatten(x, 1))


def batch():
    n, c, y, x = np.meshgrid(np.arange(2), np.arange(3), np.arange(6), np.arange(5), indexing="ij")
    return torch.from_numpy((((n * 31 + c * 17 + y * 7 + x * 3) % 23) / 11 - 1).astype(np.float32))


def main():
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    module = Patterns().eval()
    with torch.no_grad():
        # Group norm's affine parameters off their defaults, so that they matter.
        module.gn.weight.uniform_(0.5, 1.5)
        module.gn.bias.uniform_(-0.5, 0.5)
    x = batch()
    with torch.no_grad():
        logits = module(x).numpy()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "patterns.logits").write_bytes(logits.astype("<f4").tobytes())
    (OUT / "patterns.keys").write_text("".join(f"{k}\n" for k in module.state_dict()))
    names = {"input_names": ["input"], "output_names": ["logits"]}
    legacy = {"dynamic_axes": {"input": {0: "N"}, "logits": {0: "N"}}, "dynamo": False, "opset_version": 17}
    torch.onnx.export(module, x, str(OUT / "patterns_legacy.onnx"), do_constant_folding=False, **legacy, **names)
    torch.onnx.export(module, x, str(OUT / "patterns_legacy_folded.onnx"), do_constant_folding=True, **legacy, **names)
    dims = ({0: torch.export.Dim("N", min=1, max=1024)},)
    for label, opset in (("dynamo", 18), ("dynamo_opset20", 20)):
        path = OUT / f"patterns_{label}.onnx"
        torch.onnx.export(module, (x,), str(path), dynamo=True, opset_version=opset, dynamic_shapes=dims, external_data=False, **names)
    resizes = Resizes().eval()
    with torch.no_grad():
        (OUT / "resizes.logits").write_bytes(resizes(x).numpy().astype("<f4").tobytes())
    for opset in (17, 20):
        legacy = {"dynamic_axes": {"input": {0: "N"}, "logits": {0: "N"}}, "dynamo": False, "opset_version": opset}
        torch.onnx.export(resizes, x, str(OUT / f"resizes_legacy_opset{opset}.onnx"), **legacy, **names)
    for opset in (18, 20):
        path = OUT / f"resizes_dynamo_opset{opset}.onnx"
        torch.onnx.export(resizes, (x,), str(path), dynamo=True, opset_version=opset, dynamic_shapes=dims, external_data=False, **names)
    for f in sorted(OUT.iterdir()):
        print(f"{f.name}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()

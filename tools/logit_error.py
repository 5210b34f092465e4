#!/usr/bin/env python3
"""How far cnnc builds' eval logits lie from a float64 reference: for each spec, random weights
(batch norms with random running statistics), saved as safetensors, a seeded input batch, each
build's `cnnc run --weights` logits, and the same network in PyTorch (`cnnc export --to pytorch`)
in float64 on that input. Prints, per spec and build, the largest absolute error and the largest
error relative to the largest reference logit; then the same in training mode for every
parameter's gradient of the cross-entropy loss (`cnnc run --train --grads`), the largest
relative L2 error over the parameters and which one. Needs PyTorch (tools/.venv); from the repository
root:

    tools/.venv/bin/python tools/logit_error.py --cnnc old=/path/cnnc --cnnc new=target/release/cnnc \
        [--spec models/resnet20_cifar.yaml ...] [--batch 16]
"""

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file


def load_model(cnnc, spec, out):
    """The spec's PyTorch module, as `cnnc export --to pytorch` writes it."""
    subprocess.run([cnnc, "export", "--to", "pytorch", "-o", out, spec], check=True,
                   capture_output=True)
    loaded = importlib.util.spec_from_file_location("cnnc_model", os.path.join(out, "model.py"))
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    classes = [v for v in vars(module).values()
               if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__]
    return classes[0](), module.INPUT_SHAPE


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnnc", action="append", required=True, help="LABEL=PATH of a cnnc binary")
    parser.add_argument("--spec", action="append", help="spec(s); default ResNet-20 and ResNet-18")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    builds = [b.split("=", 1) for b in args.cnnc]
    specs = args.spec or ["models/resnet20_cifar.yaml", "models/resnet18.yaml"]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            name = os.path.splitext(os.path.basename(spec))[0]
            # As the issue runs them: at 3 x 32 x 32 (a copy of the spec with that input).
            with open(spec) as f:
                text = re.sub(r"^input:.*$", "input: [3, 32, 32]", f.read(), count=1, flags=re.M)
            spec = os.path.join(tmp, f"{name}.yaml")
            with open(spec, "w") as f:
                f.write(text)
            model, shape = load_model(builds[0][1], spec, os.path.join(tmp, name))
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.copy_(torch.randn_like(m.running_mean) * 0.1)
                        m.running_var.copy_(torch.rand_like(m.running_var) * 0.5 + 0.75)
                        m.weight.copy_(torch.rand_like(m.weight) * 0.5 + 0.75)
                        m.bias.copy_(torch.randn_like(m.bias) * 0.1)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            weights = os.path.join(tmp, f"{name}.safetensors")
            save_file(state, weights)
            x = torch.rand((args.batch, *shape), dtype=torch.float32) * 2 - 1
            xpath = os.path.join(tmp, f"{name}.x.npy")
            np.save(xpath, x.numpy())
            model = model.double().eval()
            with torch.no_grad():
                ref = model(x.double()).numpy()
            scale = np.abs(ref).max()
            for label, cnnc in builds:
                ypath = os.path.join(tmp, f"{name}.{label}.npy")
                done = subprocess.run([cnnc, "run", spec, "--weights", weights, "--input", xpath,
                                       "--output", ypath], capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{cnnc} run failed:\n{done.stderr}")
                err = np.abs(np.load(ypath).astype(np.float64) - ref)
                print(f"{name:16} {label:8} max abs {err.max():.3e}  max rel {err.max() / scale:.3e}"
                      f"  (largest logit {scale:.3f}, batch {args.batch})")
            labels = torch.arange(args.batch) * 7 % 10
            lpath = os.path.join(tmp, f"{name}.labels.npy")
            np.save(lpath, labels.numpy())
            model.train()
            loss = torch.nn.functional.cross_entropy(model(x.double()), labels)
            loss.backward()
            grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
            for label, cnnc in builds:
                gpath = os.path.join(tmp, f"{name}.{label}.safetensors")
                done = subprocess.run([cnnc, "run", spec, "--weights", weights, "--input", xpath,
                                       "--train", "--labels", lpath, "--grads", gpath],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{cnnc} run --train failed:\n{done.stderr}")
                got = load_file(gpath)
                worst = max((np.linalg.norm(got[k].astype(np.float64) - g) / np.linalg.norm(g), k)
                            for k, g in grads.items() if np.linalg.norm(g) > 0)
                print(f"{name:16} {label:8} gradients: largest relative L2 error {worst[0]:.3e}"
                      f" ({worst[1]})")


if __name__ == "__main__":
    main()

"""Interop checks with the real tools (not part of `cargo test`): results go into docs/INTEROP.md.

    tools/.venv/bin/python tools/onnx_check.py [--cnnc target/debug/cnnc] [--only export,import,torchrun]

export:   every spec in models/ through `cnnc export --to onnx`, then onnx.checker.check_model
          (full_check=True), strict shape inference, and ONNX Runtime's logits against `cnnc run`'s
          on the same random batch (max |difference| <= 1e-5).
pytorch:  every spec in models/ through `cnnc export --to pytorch`: model.py built, a cnnc
          safetensors file loaded with strict=True, and its logits against `cnnc run`'s.
import:   models exported by torch.onnx.export (eval mode): the seed model, torchvision's
          ResNet-18 and MobileNetV2 (random weights), and tools/make_onnx_fixtures.py's Patterns
          (padding modes, group norm, both GELUs) and Resizes (bilinear and nearest upsampling by
          factors and to sizes, both align_corners), by the legacy exporter (batch norm kept and
          folded) and the dynamo one (opsets 18 and 20), through `cnnc import`, then `cnnc run`
          of the imported spec and weights against PyTorch's logits.
resize:   torch's own export of a bilinear upsample to one row (where ONNX's half_pixel and
          pytorch_half_pixel differ) run by ONNX Runtime against torch, beside cnnc's export.
placement: train.py's device placement on simulated machines (no GPU is needed): the backend,
          device, DistributedDataParallel arguments and pinned memory `placement` picks for
          torchrun on GPUs (NCCL, LOCAL_RANK's GPU), --device cpu, no CUDA, and one process
          without torchrun; the refusals (more processes than GPUs, --device cuda without CUDA);
          and main() with CUDA faked: set_device before init_process_group("nccl"), the process
          group destroyed after training, also when training fails.
torchrun: `cnnc export --to pytorch` of the seed model, `torchrun --nproc_per_node=2` (gloo,
          --device cpu) for one epoch on the Fashion-MNIST sample shipped in data/, then `cnnc
          eval` of the result: the accuracies must agree; then --resume for a second epoch.

Needs torch, torchvision, onnx and onnxruntime (pip install into tools/.venv). Exits 1 on any
failure and prints one line per check.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import warnings

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-5
failures = []


def report(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    if not ok:
        failures.append(name)


def cnnc(binary, *args):
    result = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"cnnc {' '.join(map(str, args))} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def spec_input(spec):
    """The spec's [C, H, W] input, from `cnnc summary --format json`... kept simple: the YAML line."""
    text = spec.read_text()
    m = re.search(r"^input:\s*\[(\d+),\s*(\d+),\s*(\d+)\]", text, re.M)
    return tuple(int(v) for v in m.groups())


def random_batch(shape, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def cnnc_logits(binary, spec, x, tmp, weights=None):
    xin, yout = tmp / "x.npy", tmp / "y.npy"
    np.save(xin, x)
    args = ["run", spec, "--input", xin, "--output", yout]
    if weights:
        args += ["--weights", weights]
    cnnc(binary, *args)
    return np.load(yout)


def specs():
    """The shipped models and the exporter's corner cases."""
    return sorted((ROOT / "models").glob("*.yaml")) + sorted((ROOT / "interop" / "tests" / "specs").glob("*.yaml"))


def check_export(binary, tmp):
    import onnx
    import onnxruntime as ort

    runs = [(spec, 17) for spec in specs()]
    # Opset 19 brings Pad's `wrap` (circular padding), 20 the Gelu operator, 18 reductions
    # whose axes are an input.
    runs += [(spec, opset) for spec in specs() if spec.stem == "corners" for opset in (19, 21)]
    runs += [(spec, 18) for spec in specs() if spec.stem == "export_gaps"]
    for spec, opset in runs:
        name = f"export {spec.name} (opset {opset})"
        try:
            path = tmp / f"{spec.stem}.onnx"
            cnnc(binary, "export", spec, "--to", "onnx", "-o", path, "--opset", opset)
            model = onnx.load(str(path))
            onnx.checker.check_model(model, full_check=True)
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
            x = random_batch(spec_input(spec))
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            (ours,) = session.run(["logits"], {"input": x})
            want = cnnc_logits(binary, spec, x, tmp)
            diff = float(np.abs(ours - want).max())
            report(name, diff <= TOLERANCE, f"checker ok, onnxruntime max |diff| {diff:.2e}")
        except Exception as err:  # noqa: BLE001 - every failure is reported, then the next spec
            report(name, False, str(err).splitlines()[0][:300])


def load_model_py(folder):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"cnnc_export_{folder.name}", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_safetensors(path):
    import torch

    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    header.pop("__metadata__", None)
    dtypes = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        array = np.frombuffer(data[8 + size + start : 8 + size + end], dtype=dtypes[info["dtype"]])
        out[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return out


def check_pytorch(binary, tmp):
    import torch

    for spec in specs():
        name = f"pytorch {spec.name}"
        try:
            folder = tmp / f"pt_{spec.stem}"
            cnnc(binary, "export", spec, "--to", "pytorch", "-o", folder)
            module = load_model_py(folder)
            (cls,) = [v for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__]
            model = cls()
            # Random weights (and batch-norm statistics) written as safetensors: model.py loads
            # them strictly, cnnc runs with them, and the logits must agree.
            weights = folder / "w.safetensors"
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            for k, v in state.items():
                if v.dtype == torch.float32:
                    v.copy_(torch.randn_like(v) * 0.1)
                    if k.endswith("running_var"):
                        v.abs_().add_(0.5)
            write_safetensors(weights, state)
            model.load_state_dict(read_safetensors(weights), strict=True)
            model.eval()
            x = random_batch(spec_input(spec))
            with torch.no_grad():
                ours = model(torch.from_numpy(x)).numpy()
            want = cnnc_logits(binary, spec, x, tmp, weights)
            diff = float(np.abs(ours - want).max())
            scale = max(1.0, float(np.abs(want).max()))
            report(name, diff <= TOLERANCE * scale, f"strict load ok, max |diff| {diff:.2e} (logits up to {scale:.1f})")
        except Exception as err:  # noqa: BLE001
            report(name, False, str(err).splitlines()[0][:300])


def write_safetensors(path, state, metadata=None):
    header, blobs, offset = {"__metadata__": metadata or {"format": "pt"}}, [], 0
    for name, tensor in state.items():
        array = tensor.detach().cpu().contiguous().numpy()
        dtype = {np.dtype("float32"): "F32", np.dtype("int64"): "I64"}[array.dtype]
        blob = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def check_import(binary, tmp):
    """torch.onnx.export (eval mode, TorchScript exporter, opset 17) → cnnc import → the weights
    loaded strictly into the original PyTorch module (when batch norm is kept) and the logits
    compared, plus `cnnc check` and `cnnc run` of the imported spec."""
    import torch
    import torchvision

    sys.path.insert(0, str(ROOT / "tools"))
    from custom_cnn import CustomCNN
    from make_onnx_fixtures import Patterns, Resizes

    torch.manual_seed(0)
    models = [
        ("seed", CustomCNN(), (3, 32, 32)),
        ("resnet18", torchvision.models.resnet18(), (3, 64, 64)),
        ("mobilenet_v2", torchvision.models.mobilenet_v2(), (3, 64, 64)),
        ("patterns", Patterns(), (3, 6, 5)),
        ("resizes", Resizes(), (3, 6, 5)),
    ]
    exports = [
        ("legacy, batch norm kept", dict(dynamo=False, opset_version=17, do_constant_folding=False), True),
        ("legacy, batch norm folded", dict(dynamo=False, opset_version=17, do_constant_folding=True), False),
        ("dynamo, opset 18", dict(dynamo=True, opset_version=18), False),
        ("dynamo, opset 20", dict(dynamo=True, opset_version=20), False),
    ]
    for label, module, shape in models:
        module.eval()
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, torch.nn.GroupNorm) and m.affine:
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)
        x = random_batch(shape)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        for how, options, strict in exports:
            name = f"import {label} ({how})"
            tag = f"{label}_{how.replace(' ', '_').replace(',', '')}"
            try:
                onnx_path = tmp / f"{tag}.onnx"
                io = dict(input_names=["input"], output_names=["logits"])
                if options["dynamo"]:
                    dims = ({0: torch.export.Dim("N", min=1, max=1024)},)
                    torch.onnx.export(module, (torch.from_numpy(x),), str(onnx_path), dynamic_shapes=dims,
                                      external_data=False, verbose=False, **io, **options)
                else:
                    torch.onnx.export(module, torch.from_numpy(x), str(onnx_path),
                                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, **io, **options)
                spec, weights = tmp / f"{tag}.yaml", tmp / f"{tag}.safetensors"
                cnnc(binary, "import", onnx_path, "-o", spec, "--weights-out", weights)
                details = []
                ok = True
                if strict:
                    # Every state_dict name and shape survives: the original module loads them.
                    imported = read_safetensors(weights)
                    clone = copy.deepcopy(module)
                    for p in clone.state_dict().values():
                        p.zero_()
                    clone.load_state_dict(imported, strict=True)
                    clone.eval()
                    with torch.no_grad():
                        got = clone(torch.from_numpy(x)).numpy()
                    diff = float(np.abs(got - want).max())
                    ok &= diff <= TOLERANCE * max(1.0, float(np.abs(want).max()))
                    details.append(f"strict load into the torch module, max |diff| {diff:.2e}")
                check = subprocess.run([str(binary), "check", str(spec)], capture_output=True, text=True)
                if check.returncode == 0:
                    got = cnnc_logits(binary, spec, x, tmp, weights)
                    diff = float(np.abs(got - want).max())
                    ok &= diff <= TOLERANCE * max(1.0, float(np.abs(want).max()))
                    details.append(f"cnnc run max |diff| {diff:.2e}")
                else:
                    ok = False
                    first = (check.stdout + check.stderr).strip().splitlines()
                    details.append(f"cnnc check refuses the spec: {first[0] if first else '?'}")
                report(name, ok, "; ".join(details))
            except Exception as err:  # noqa: BLE001
                report(name, False, str(err).splitlines()[0][:300])


def check_resize(binary, tmp):
    """Which coordinate transformation torch writes for a bilinear upsample, and whether ONNX
    Runtime then gives torch's numbers, where an output of one row tells half_pixel (PyTorch's
    formula) from pytorch_half_pixel (which maps it to the first input row)."""
    import onnx
    import onnxruntime as ort
    import torch

    for align in (False, True):
        name = f"resize torch bilinear to 1x3, align_corners={align}"
        try:
            module = torch.nn.Upsample(size=(1, 3), mode="bilinear", align_corners=align).eval()
            x = random_batch((2, 4, 5))
            with torch.no_grad():
                want = module(torch.from_numpy(x)).numpy()
            path = tmp / f"resize_{align}.onnx"
            torch.onnx.export(module, torch.from_numpy(x), str(path), input_names=["input"], output_names=["logits"],
                              opset_version=17, dynamo=False)
            (node,) = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Resize"]
            mode = [a.s.decode() for a in node.attribute if a.name == "coordinate_transformation_mode"][0]
            (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
            diff = float(np.abs(got - want).max())
            report(name, True, f"torch writes {mode}; onnxruntime vs torch max |diff| {diff:.2e}")
        except Exception as err:  # noqa: BLE001
            report(name, False, str(err).splitlines()[0][:300])


def check_placement(binary, tmp):
    """train.py's NCCL path without a GPU: `placement` on simulated machines, and `main` with
    CUDA faked (torch.cuda and torch.distributed replaced by recorders, training by a stub)."""
    import importlib.util
    from unittest import mock

    import torch

    name = "train.py placement"
    try:
        folder = tmp / "placement"
        cnnc(binary, "export", ROOT / "models" / "custom_cnn.yaml", "--to", "pytorch", "-o", folder)
        loader = importlib.util.spec_from_file_location("cnnc_train", folder / "train.py")
        train = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(train)
        cpu, gpu1 = torch.device("cpu"), torch.device("cuda", 1)
        torchrun = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}
        cases = [
            ("torchrun, 2 GPUs", (None, torchrun, True, 2), ("nccl", gpu1, {"device_ids": [1], "output_device": 1}, True)),
            ("torchrun, --device cpu", ("cpu", torchrun, True, 2), ("gloo", cpu, {}, False)),
            ("torchrun, no CUDA", (None, torchrun, False, 0), ("gloo", cpu, {}, False)),
            ("one process, 1 GPU", (None, {}, True, 1), (None, torch.device("cuda", 0), {"device_ids": [0], "output_device": 0}, True)),
        ]
        details = []
        for label, given, want in cases:
            got = train.placement(*given)
            if got != want:
                raise RuntimeError(f"{label}: {got}, expected {want}")
        for label, given, words in [
            ("LOCAL_RANK past the GPUs", (None, {"RANK": "2", "LOCAL_RANK": "2"}, True, 2), "LOCAL_RANK 2"),
            ("--device cuda without CUDA", ("cuda", {}, False, 0), "--device cpu"),
        ]:
            try:
                train.placement(*given)
                raise RuntimeError(f"{label}: accepted")
            except SystemExit as exit_:
                if words not in str(exit_.code):
                    raise RuntimeError(f"{label}: {exit_.code}") from None
        details.append(f"{len(cases)} placements and 2 refusals as expected")
        calls = []
        fake = {
            "torch.cuda.is_available": lambda: True,
            "torch.cuda.device_count": lambda: 2,
            "torch.cuda.set_device": lambda d: calls.append(("set_device", str(d))),
        }
        patches = [mock.patch(target, side) for target, side in fake.items()]
        patches += [
            mock.patch.object(train.dist, "init_process_group", lambda backend: calls.append(("init", backend))),
            mock.patch.object(train.dist, "destroy_process_group", lambda: calls.append(("destroy",))),
            mock.patch.dict(os.environ, torchrun),
            mock.patch.object(sys, "argv", ["train.py", "--data", str(tmp)]),
        ]
        for failing in (False, True):
            calls.clear()

            def run(args, device, ddp, pin, distributed, failing=failing):
                calls.append(("run", str(device), ddp["device_ids"], pin, distributed))
                if failing:
                    raise KeyboardInterrupt

            with mock.patch.object(train, "run", run):
                for p in patches:
                    p.start()
                try:
                    train.main()
                except KeyboardInterrupt:
                    pass
                finally:
                    for p in reversed(patches):
                        p.stop()
            want = [("set_device", "cuda:1"), ("init", "nccl"), ("run", "cuda:1", [1], True, True), ("destroy",)]
            if calls != want:
                raise RuntimeError(f"main() with CUDA faked{' and training failing' if failing else ''}: {calls}")
        details.append("main(): set_device(cuda:1), init_process_group(nccl), training, destroy_process_group "
                       "(also when training raises)")
        report(name, True, "; ".join(details))
    except Exception as err:  # noqa: BLE001
        report(name, False, str(err).splitlines()[0][:300])


def check_torchrun(binary, tmp):
    name = "torchrun custom_cnn.yaml"
    try:
        spec = ROOT / "models" / "custom_cnn.yaml"
        folder = tmp / "torchrun"
        cnnc(binary, "export", spec, "--to", "pytorch", "-o", folder)
        torchrun = Path(sys.executable).with_name("torchrun")
        out = folder / "run"

        def train(*flags):
            started = time.time()
            result = subprocess.run(
                [str(torchrun), "--nproc_per_node=2", str(folder / "train.py"), "--dataset", "sample",
                 "--data", str(ROOT / "data" / "fashion-mnist-sample"), "--out", str(out), "--device", "cpu", *flags],
                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
            if result.returncode != 0:
                raise RuntimeError(f"torchrun exited {result.returncode}: {result.stderr.strip()[-500:]}")
            return result.stdout, time.time() - started

        def compare(stdout):
            torch_acc = float(re.findall(r"test accuracy ([0-9.]+)", stdout)[-1])
            text = cnnc(binary, "eval", spec, "--weights", out / "model.safetensors", "--format", "json")
            return torch_acc, json.loads(text)["accuracy"]

        stdout, seconds = train("--epochs", "1")
        torch_acc, cnnc_acc = compare(stdout)
        ok = abs(torch_acc - cnnc_acc) <= 1e-4
        report(name, ok, f"2 gloo processes, 1 epoch in {seconds:.0f} s: train.py test accuracy {torch_acc:.4f}, cnnc eval {cnnc_acc:.4f}")
        stdout, seconds = train("--epochs", "2", "--resume")
        torch_acc, cnnc_acc = compare(stdout)
        ok = "resuming after epoch 1" in stdout and "epoch 1:" not in stdout and abs(torch_acc - cnnc_acc) <= 1e-4
        report(f"{name} --resume", ok, f"epoch 2 after resuming, {seconds:.0f} s: train.py {torch_acc:.4f}, cnnc eval {cnnc_acc:.4f}")
    except Exception as err:  # noqa: BLE001
        report(name, False, str(err).splitlines()[0][:300])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnnc", type=Path, default=ROOT / "target" / "debug" / "cnnc")
    parser.add_argument("--only", default="export,pytorch,import,resize,placement,torchrun")
    args = parser.parse_args()
    import onnx
    import onnxruntime
    import torch

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    print(f"# {time.strftime('%Y-%m-%d')}: torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}")
    checks = {"export": check_export, "pytorch": check_pytorch, "import": check_import, "resize": check_resize,
              "placement": check_placement, "torchrun": check_torchrun}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            checks[key](args.cnnc, Path(tmp))
    print(f"{len(failures)} failed" if failures else "all passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Checks that a cnnc build computes the same bits whatever the thread count and SIMD path, and
(with --base) the same bits as another build.

For each spec (every models/*.yaml unless --spec says), on a seeded batch:

- eval logits (`cnnc run --output`),
- training-mode loss and every parameter's gradient (`cnnc run --train --labels --grads`),

at each thread count (RAYON_NUM_THREADS) and each SIMD cap (CNNC_SIMD; `native` leaves it unset).
Every configuration's files must be byte-identical to the first's; those are kept under --out as
`<spec>.b<N>.eval.npy`, `<spec>.b<N>.train.safetensors` and `<spec>.b<N>.loss.txt`. With --base,
each kept file is also compared byte for byte with the file of the same name there (the output of
an earlier run, e.g. the build a change started from). --big adds the performance issue's large
batches: ResNet-20 and ResNet-18 (at 3x32x32) at batch 256 eval and batch 64 training.

Uses only Python's standard library (no venv needed). Exit status 0: all identical; 1: some file
differs (each difference is printed); 2: usage or a cnnc run failed. Usage, from the repository
root:

    tools/bit_identity.py --cnnc target/release/cnnc --out /tmp/bits-new [--base /tmp/bits-old]
        [--threads 1,2,3] [--isa native,avx2] [--batch 4] [--big] [--spec models/X.yaml ...]
"""

import argparse
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_npy(path, dtype, shape, values):
    """A version-1 .npy file: `dtype` is '<f4' or '<i8', C order."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        dtype, "".join(f"{d}, " for d in shape))
    # Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64.
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    fmt = {"<f4": "f", "<i8": "q"}[dtype]
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(struct.pack(f"<{len(values)}{fmt}", *values))


def npy_shape(path):
    """The shape in a .npy file's header."""
    with open(path, "rb") as f:
        head = f.read(10)
        (length,) = struct.unpack("<H", head[8:10])
        header = f.read(length).decode("latin1")
    dims = re.search(r"'shape':\s*\(([^)]*)\)", header).group(1)
    return [int(d) for d in dims.split(",") if d.strip()]


def seeded_floats(count, seed):
    """`count` floats in [-1, 1) from a 64-bit xorshift: the same on every machine."""
    state = seed * 0x9E3779B97F4A7C15 % 2**64 or 1
    out = []
    for _ in range(count):
        state ^= (state << 13) % 2**64
        state ^= state >> 7
        state ^= (state << 17) % 2**64
        out.append((state >> 40) / 2**23 - 1.0)
    return out


def spec_input(text):
    m = re.search(r"^input:\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]", text, re.M)
    return tuple(int(g) for g in m.groups()) if m else None


def run(cmd, env):
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"bit_identity: {' '.join(cmd)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def check_case(args, name, spec, batch, work):
    """Runs one spec at one batch size in every configuration; returns the differences."""
    with open(spec) as f:
        shape = spec_input(f.read())
    if shape is None:
        sys.exit(f"bit_identity: {spec} has no `input: [C, H, W]` line")
    tag = f"{name}.b{batch}"
    x = os.path.join(work, f"{tag}.x.npy")
    write_npy(x, "<f4", (batch, *shape), seeded_floats(batch * shape[0] * shape[1] * shape[2], 7))
    configs = [(isa, t) for isa in args.isa for t in args.threads]
    labels = None
    diffs = []
    kept = None
    for isa, threads in configs:
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        env.pop("CNNC_SIMD", None)
        if isa != "native":
            env["CNNC_SIMD"] = isa
        out = os.path.join(work, f"{tag}.{isa}.t{threads}")
        run([args.cnnc, "run", spec, "--input", x, "--output", out + ".eval.npy"], env)
        if labels is None:
            classes = npy_shape(out + ".eval.npy")[1]
            labels = os.path.join(work, f"{tag}.y.npy")
            write_npy(labels, "<i8", (batch,), [(7 * i + 3) % classes for i in range(batch)])
        loss = run([args.cnnc, "run", spec, "--input", x, "--train", "--labels", labels,
                    "--grads", out + ".train.safetensors"], env)
        with open(out + ".loss.txt", "w") as f:
            f.write(loss)
        files = [out + ext for ext in (".eval.npy", ".train.safetensors", ".loss.txt")]
        if kept is None:
            kept = []
            for path, ext in zip(files, (".eval.npy", ".train.safetensors", ".loss.txt")):
                dest = os.path.join(args.out, tag + ext)
                shutil.move(path, dest)
                kept.append(dest)
            continue
        for path, ref in zip(files, kept):
            if not same_bytes(path, ref):
                diffs.append(f"{os.path.basename(ref)}: {isa} at {threads} threads differs from "
                             f"{configs[0][0]} at {configs[0][1]} threads")
            os.remove(path)
    for ref in kept:
        if args.base:
            base = os.path.join(args.base, os.path.basename(ref))
            if not os.path.exists(base):
                diffs.append(f"{os.path.basename(ref)}: not in {args.base}")
            elif not same_bytes(ref, base):
                diffs.append(f"{os.path.basename(ref)}: differs from {base}")
    state = "identical" if not diffs else f"{len(diffs)} difference(s)"
    print(f"{tag:<32} {len(configs)} configurations: {state}", flush=True)
    return diffs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnnc", required=True)
    parser.add_argument("--out", required=True, help="directory for the kept files (created)")
    parser.add_argument("--base", help="a directory an earlier run wrote with --out")
    parser.add_argument("--threads", default="1,2,3")
    parser.add_argument("--isa", default="native,avx2")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--big", action="store_true")
    parser.add_argument("--spec", nargs="*")
    args = parser.parse_args()
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        args.threads = []
    if not args.threads or min(args.threads) < 1:
        parser.error("--threads: give thread counts of at least 1, separated by commas (1,2,3)")
    args.isa = args.isa.split(",")
    for isa in args.isa:
        if isa not in ("native", "avx512", "avx2", "none"):
            parser.error(f"--isa {isa!r}: each must be native, avx512, avx2 or none")
    args.cnnc = os.path.abspath(args.cnnc)
    if not (os.path.isfile(args.cnnc) and os.access(args.cnnc, os.X_OK)):
        parser.error(f"--cnnc {args.cnnc}: not an executable file (cargo build --release makes "
                     "target/release/cnnc)")
    if args.base and not os.path.isdir(args.base):
        parser.error(f"--base {args.base}: not a directory (an earlier run's --out)")
    for spec in args.spec or []:
        if not os.path.isfile(spec):
            parser.error(f"--spec {spec}: no such file")
    os.makedirs(args.out, exist_ok=True)
    specs = args.spec or sorted(
        os.path.join(ROOT, "models", f) for f in os.listdir(os.path.join(ROOT, "models"))
        if f.endswith(".yaml"))
    diffs = []
    with tempfile.TemporaryDirectory() as work:
        for spec in specs:
            name = os.path.splitext(os.path.basename(spec))[0]
            diffs += check_case(args, name, spec, args.batch, work)
        if args.big:
            r18 = os.path.join(work, "resnet18_32.yaml")
            with open(os.path.join(ROOT, "models", "resnet18.yaml")) as f:
                text = re.sub(r"^input:.*$", "input: [3, 32, 32]", f.read(), count=1, flags=re.M)
            with open(r18, "w") as f:
                f.write(text)
            for name, spec in (("resnet20_cifar", os.path.join(ROOT, "models",
                                                                "resnet20_cifar.yaml")),
                               ("resnet18_32", r18)):
                for batch in (64, 256):
                    diffs += check_case(args, name, spec, batch, work)
    for d in diffs:
        print(d)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()

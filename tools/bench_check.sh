#!/usr/bin/env bash
# Benchmarks `cnnc check` as whole processes (not a timed test): the seed model alone, and
# 1,000 specs (the seed in both languages, 500 copies each) in one call. Uses hyperfine when
# installed (`apt-get install -y hyperfine`), else a plain loop.
#
#   cargo build --release && tools/bench_check.sh [path/to/cnnc]
set -euo pipefail
cd "$(dirname "$0")/.."
cnnc="${1:-target/release/cnnc}"
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
for i in $(seq 1 500); do
    cp models/custom_cnn.yaml "$corpus/seed_$i.yaml"
    cp models/custom_cnn.cnn "$corpus/seed_$i.cnn"
done

if command -v hyperfine > /dev/null; then
    hyperfine --warmup 5 --runs 50 --shell none \
        "$cnnc check models/custom_cnn.yaml" \
        "$cnnc check $corpus"
else
    for args in "models/custom_cnn.yaml:50" "$corpus:10"; do
        target="${args%:*}" runs="${args##*:}"
        start=$(date +%s%N)
        for _ in $(seq 1 "$runs"); do "$cnnc" check "$target" > /dev/null; done
        end=$(date +%s%N)
        echo "cnnc check $target: $(( (end - start) / runs / 1000 )) µs per run (mean of $runs)"
    done
fi

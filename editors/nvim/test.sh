#!/usr/bin/env bash
# Neovim headless against `cnnc lsp`, as a person would use it: open a spec with a mistake, wait
# for the diagnostic, read the inlay hints, apply the code action, save, and check the file on disk
# is fixed. Needs `nvim` (Debian's `neovim`, 0.7 or later) and a built cnnc:
#
#   cargo build && editors/nvim/test.sh            # or CNNC=/path/to/cnnc editors/nvim/test.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export CNNC="${CNNC:-$repo/target/debug/cnnc}"
command -v nvim >/dev/null || { echo "nvim is not installed (apt-get install neovim)" >&2; exit 2; }
[ -x "$CNNC" ] || { echo "no cnnc at $CNNC: run cargo build first, or set CNNC" >&2; exit 2; }

dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
export CNNC_SPEC="$dir/tiny.cnn"
# The mistake: a flatten of [4, 6, 6] gives 144 features, not 100.
cat >"$CNNC_SPEC" <<'SPEC'
model Tiny
input (3, 8, 8)
conv2d(out_channels=4, kernel_size=3)
relu
flatten
linear(in_features=100, out_features=2)
SPEC

nvim --headless --clean -u NONE -c "luafile $here/test.lua"
expected='linear(in_features=144, out_features=2)'
if grep -qxF "$expected" "$CNNC_SPEC" && "$CNNC" check "$CNNC_SPEC" >/dev/null; then
  echo "ok: the saved spec reads \`$expected\` and cnnc check passes"
else
  echo "FAIL: the saved spec was not fixed:" >&2
  cat "$CNNC_SPEC" >&2
  exit 1
fi

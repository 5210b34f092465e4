#!/usr/bin/env python3
"""Regenerates docs/diagnostics.md: one section per diagnostic code, with the real output of
`cnnc check` on an example spec. Run from the repository root after `cargo build --release`:

    python3 tools/diagnostics_doc.py > docs/diagnostics.md
"""
import os
import re
import subprocess
import sys
import tempfile

CNNC = os.environ.get("CNNC", "target/release/cnnc")
CORPUS = "spec/tests/corpus"

# (code, title, explanation, example: corpus path or (file name, inline text))
CODES = [
    ("E0001", "YAML syntax error", "The text is not valid YAML. The message is serde-saphyr's.", "invalid/yaml_unclosed_brace.yaml"),
    ("E0002", "DSL syntax error", "The text does not follow the DSL grammar; the caret is at the first token that cannot continue a valid spec.", "invalid/dsl_colon_argument.cnn"),
    ("E0003", "spec file too large", "Specs are limited to 1 MiB, checked before parsing; only the first 1 MiB is ever read. Example: a 2 MB file whose first line is a comment.", ("big.yaml", "# " + "x" * 2_000_000 + "\n")),
    ("E0004", "nesting too deep", "Lists are nested more than 16 deep (DSL brackets, YAML collections).", "invalid/nesting_too_deep.cnn"),
    ("E0005", "not shaped like a spec", "The document is not a mapping, `layers` is not a list, or a layer is neither a name nor a one-key mapping.", "invalid/layer_two_keys.yaml"),
    ("E0006", "unknown top-level key", "A YAML spec has only `model`, `input` and `layers`.", "invalid/unknown_top_level_key.yaml"),
    ("E0101", "missing input", "Every spec states its per-sample input shape `[C, H, W]`.", "invalid/missing_input.yaml"),
    ("E0102", "bad input shape", "`input` must be three positive integers `[channels, height, width]`.", "invalid/input_two_dims.yaml"),
    ("E0103", "no layers", "A model needs at least one layer.", ("empty_layers.yaml", "input: [1, 2, 2]\nlayers: []\n")),
    ("E0104", "too many layers", "At most 10,000 layers. Example: `input (1, 1, 1)` followed by 10,001 `relu` lines.", ("many.cnn", "input (1, 1, 1)\n" + "relu\n" * 10_001)),
    ("E0201", "unknown layer kind", "The layer kinds are conv2d, maxpool2d, avgpool2d, relu, leaky_relu, sigmoid, tanh, flatten, linear, dropout and batchnorm2d. A close spelling is suggested, except for a PyTorch module cnnc does not have yet (`dropout2d`, `conv1d`, `relu6`, ...): the kind spelt like it computes something else, and a note says so.", "invalid/unknown_layer_conv.yaml"),
    ("E0202", "unknown argument", "Argument names are PyTorch's; a close match is suggested.", "invalid/unknown_argument.yaml"),
    ("E0203", "missing argument", "`conv2d` needs `out_channels` and `kernel_size`, pools need `kernel_size`, `linear` needs `out_features`.", "invalid/missing_kernel_size.yaml"),
    ("E0204", "wrong type", "Sizes are integers (or `[h, w]` pairs where PyTorch takes pairs), rates are numbers, flags are `true`/`false`. PyTorch's string padding modes (`padding: same`, `padding: valid`) are not supported yet; the error says what number to write instead.", "invalid/pair_of_three.cnn"),
    ("E0205", "duplicate argument or key", "An argument (or YAML key) is given twice.", "invalid/duplicate_argument.cnn"),
    ("E0206", "invalid value", "A value outside its range: sizes below 1, a stride of 0, negative padding, `p` outside [0, 1], `eps` not above 0.", "invalid/stride_zero.yaml"),
    ("E0207", "invalid layer name", "A name becomes a state_dict prefix, so it is dot-separated parts of `[A-Za-z0-9_]`.", "invalid/invalid_names.yaml"),
    ("E0208", "duplicate layer name", "Names must be unique; an unnamed layer is named by its index, like `nn.Sequential`.", "invalid/name_clashes_with_default.yaml"),
    ("E0301", "size mismatch", "An explicit `in_channels`, `in_features` or `num_features` disagrees with the inferred input. The notes show how the inferred size came about.", "invalid/in_features_mismatch.yaml"),
    ("E0302", "output below 1", "The (dilated) window does not fit in the padded input; PyTorch raises at run time.", "invalid/output_too_small.yaml"),
    ("E0303", "pooling padding too large", "PyTorch requires pooling padding of at most half the kernel size.", "invalid/pool_padding.yaml"),
    ("E0304", "image layer on flat input", "`conv2d`, pooling and `batchnorm2d` need `[C, H, W]` input.", "invalid/conv_after_flatten.yaml"),
    ("E0305", "linear on image input", "`linear` needs a flat input; cnnc does not flatten implicitly.", "invalid/linear_without_flatten.cnn"),
    ("E0306", "beyond the size limits", "Any size above 2^20, or a tensor (activation or parameter) above 2^31 elements, is rejected instantly, before anything is allocated.", "invalid/tensor_over_limit.cnn"),
    ("W0001", "input rows or columns dropped", "PyTorch rounds output sizes down, so the last rows or columns that no window reaches are silently ignored. Caffe rounds pooling up: a classic porting trap. A stride larger than the kernel also skips the rows and columns between windows; the warning counts those too (`ignores 2 rows and 2 columns between windows`).", "warn/pool_drops_edge.yaml"),
    ("W0002", "redundant flatten", "`flatten` of an already flat input does nothing.", "warn/redundant_flatten.cnn"),
    ("W0003", "bias before batchnorm", "A convolution bias directly followed by `batchnorm2d` is cancelled by the mean subtraction.", "warn/bias_before_batchnorm.yaml"),
]


def example(code, spec):
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(spec, tuple):
            name, text = spec
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(text)
            shown = name
        else:
            path = os.path.join(CORPUS, spec)
            with open(path) as f:
                text = f.read()
            shown = spec
        out = subprocess.run([CNNC, "check", "--color", "never", path], capture_output=True, text=True).stdout
        out = out.replace(path, shown)
        blocks = [b for b in out.split("\n\n") if re.match(r"(error|warning)\[" + code + r"\]", b)]
        if not blocks:
            sys.exit(f"{code}: no such diagnostic from {shown}")
        return text, blocks[0]


def main():
    print("# cnnc diagnostics\n")
    print("Every diagnostic `cnnc check` can report. Codes are stable: a code never changes meaning,")
    print("and new checks get new codes. `E` codes are errors (exit status 1), `W` codes warnings")
    print("(exit status 0 unless `--deny warnings`). With `--format json` each diagnostic is an object")
    print("with the keys `severity`, `code`, `message`, `file`, `line`, `column`, `end_line`,")
    print("`end_column` (1-based; columns count characters; `end_column` is one past the end),")
    print("`layer` (the layer's state_dict name, or null), `label`, `notes` and `help`.\n")
    print("Regenerate this file with `python3 tools/diagnostics_doc.py > docs/diagnostics.md`.\n")
    for code, title, explanation, spec in CODES:
        print(f"## {code}: {title}\n")
        print(explanation + "\n")
        text, block = example(code, spec)
        if len(text) <= 2000:
            lang = "yaml" if (spec if isinstance(spec, str) else spec[0]).endswith((".yaml", ".yml")) else "text"
            print(f"```{lang}\n{text.rstrip()}\n```\n")
        print(f"```text\n{block.rstrip()}\n```\n")


main()

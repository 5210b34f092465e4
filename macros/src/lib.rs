//! The `cnn_model!` procedural macro: a thin shim over [`cnnc_codegen::expand`]. Use it through
//! the `cnnc` facade crate (`cnnc::cnn_model!`), whose documentation describes the generated model.

use proc_macro::TokenStream;

/// Generates a statically shaped model from a cnnc spec.
///
/// From a file, relative to the calling crate's root (`CARGO_MANIFEST_DIR`), YAML or DSL by
/// extension; the build re-runs when the file changes:
///
/// ```text
/// cnnc::cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");
/// ```
///
/// Inline, in the cnnc DSL after a `;` (use `//` comments inside):
///
/// ```text
/// cnnc::cnn_model! {
///     pub Tiny;
///     input (1, 8, 8)
///     conv2d(out_channels=4, kernel_size=3)
///     flatten
///     linear(out_features=2)
/// }
/// ```
///
/// `#[cnnc(crate = path::to::cnnc)]` before the name sets the path the generated code uses for the
/// facade crate (for crates that re-export it); other attributes go on the generated struct.
///
/// Spec errors are compile errors and spec warnings are `cargo build` warnings, each carrying the
/// text `cnnc check` prints (`error[E0301]: ...`, `warning[W0003]: ...`, the spec's line and the
/// help) under rustc's own first line: `error: the spec does not check:` and, since a stable proc
/// macro can only warn through a deprecated item, `warning: use of deprecated constant
/// `_::W0003_0``. `#![deny(warnings)]` turns spec warnings into errors.
#[proc_macro]
pub fn cnn_model(input: TokenStream) -> TokenStream {
    cnnc_codegen::expand(input.into()).into()
}

//! Spec diagnostics as `cnn_model!` output: each error becomes a `compile_error!` and each warning a
//! use of a `#[deprecated]` constant (the only way a stable proc macro makes rustc print a warning:
//! the technique of the proc-macro-warning crate), both carrying the text `cnnc check` prints,
//! header (`error[E0301]: ...`, `warning[W0003]: ...`) included, at the span `at` picks.
//!
//! rustc puts its own `error: ` / `warning: use of deprecated constant ...: ` before the message;
//! the message starts on the next line, so the header and the source snippet below it read exactly
//! as they do in a terminal.

use cnnc_spec::{Diagnostic, Source};
use proc_macro2::{Ident, Span, TokenStream};
use quote::{quote, quote_spanned};

/// What rustc's first line of a spec error says; the diagnostic follows on the next lines.
const ERROR_LEAD: &str = "the spec does not check:";

/// The text `cnnc check` prints for `d` (without colour), with its fix shown as a help line: rustc
/// cannot apply a fix from a proc macro.
fn rendered(d: &Diagnostic, source: &Source) -> String {
    let d = Diagnostic {
        fix: None,
        ..d.clone()
    };
    cnnc_spec::render(&d, source, false)
}

/// One `compile_error!` per error diagnostic and one deprecation warning per warning, in the order
/// the checker reported them.
pub fn diagnostics(
    diagnostics: &[Diagnostic],
    source: &Source,
    at: impl Fn(&Diagnostic) -> Span,
) -> TokenStream {
    let errors: TokenStream = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| {
            let message = format!("{ERROR_LEAD}\n{}", rendered(d, source));
            syn::Error::new(at(d), message).to_compile_error()
        })
        .collect();
    let warnings = warnings(diagnostics, source, at);
    quote!(#errors #warnings)
}

/// The warnings among `diagnostics`, each as a use of a constant deprecated with the warning's text
/// as its note, inside an anonymous `const _` (nothing is added to the caller's namespace). The
/// constant is named by the code (`W0003`), which rustc shows: `use of deprecated constant
/// `_::W0003``.
pub fn warnings(
    diagnostics: &[Diagnostic],
    source: &Source,
    at: impl Fn(&Diagnostic) -> Span,
) -> TokenStream {
    let uses: Vec<TokenStream> = diagnostics
        .iter()
        .filter(|d| !d.is_error())
        .enumerate()
        .map(|(i, d)| {
            let span = at(d);
            let note = format!("\n{}", rendered(d, source));
            // Unique per warning (rustc would merge two uses of one constant), led by the code.
            let name = Ident::new(&format!("{}_{i}", d.code.as_str()), span);
            let used = quote_spanned!(span=> let _ = #name;);
            quote! {
                #[deprecated(note = #note)]
                #[allow(non_upper_case_globals)]
                const #name: () = ();
                #used
            }
        })
        .collect();
    if uses.is_empty() {
        return TokenStream::new();
    }
    quote! {
        const _: () = {
            #(#uses)*
        };
    }
}

#[cfg(test)]
mod tests {
    use crate::expand;

    fn expand_str(input: &str) -> String {
        let tokens: proc_macro2::TokenStream = input.parse().expect("tokens");
        expand(tokens).to_string()
    }

    #[test]
    fn warnings_become_deprecated_constants_with_the_check_text() {
        let out = expand_str(
            "pub Tiny; input (1, 4, 4) conv2d(out_channels=2, kernel_size=3) batchnorm2d flatten \
             linear(out_features=2)",
        );
        assert!(
            out.contains("pub struct Tiny"),
            "the model is still generated: {out}"
        );
        assert!(out.contains("deprecated"), "{out}");
        assert!(out.contains("const W0003_0"), "{out}");
        assert!(
            out.contains("warning[W0003]: the bias of layer 0 (conv2d)"),
            "{out}"
        );
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn errors_carry_the_check_header_and_warnings_come_along() {
        let out = expand_str(
            "pub Tiny; input (1, 4, 4) conv2d(out_channels=2, kernel_size=3) batchnorm2d flatten \
             linear(out_features=2, biass=false)",
        );
        assert!(!out.contains("pub struct Tiny"), "{out}");
        assert!(
            out.contains(
                "the spec does not check:\\nerror[E0202]: `linear` has no argument `biass`"
            ),
            "{out}"
        );
        assert!(out.contains("warning[W0003]"), "{out}");
    }

    #[test]
    fn a_clean_spec_adds_nothing() {
        let out = expand_str("Tiny; input (1, 4, 4) flatten linear(out_features=2)");
        assert!(!out.contains("deprecated"), "{out}");
    }
}

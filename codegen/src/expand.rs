//! The logic of the `cnn_model!` macro, as a plain function over token streams so that it is
//! testable without a compiler: parse the invocation, read the spec (a file under the calling
//! crate's root, or DSL written inline), check it, and either generate the model or turn every
//! diagnostic into its own `compile_error!` (warnings: a deprecation warning) at the right token.
//!
//! ```text
//! cnn_model!(pub CustomCnn, "models/custom_cnn.yaml");
//! cnn_model! { #[cnnc(crate = my::reexport)] pub Tiny; input (1, 8, 8) flatten linear(out_features=2) }
//! ```

use std::ops::Range;
use std::path::Path as FsPath;

use cnnc_spec::{Diagnostic, Format, Source};
use proc_macro2::{Delimiter, Ident, Span, TokenStream, TokenTree};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, LitStr, Path, Token, Visibility};

use crate::diagnostics::{diagnostics, warnings};
use crate::model::{Options, generate};

/// Expands a `cnn_model!` invocation (the tokens inside the macro's delimiters) into the model's
/// items, or into one `compile_error!` per problem. Never panics.
pub fn expand(input: TokenStream) -> TokenStream {
    match syn::parse2::<Invocation>(input) {
        Ok(invocation) => invocation.expand(),
        Err(err) => err.to_compile_error(),
    }
}

/// A parsed invocation: `#[attrs] vis Name, "path"` or `#[attrs] vis Name; <DSL>`.
struct Invocation {
    attrs: Vec<Attribute>,
    krate: Option<Path>,
    vis: Visibility,
    name: Ident,
    spec: Spec,
}

enum Spec {
    /// A spec file, relative to the calling crate's `CARGO_MANIFEST_DIR`.
    File(LitStr),
    /// DSL tokens after the `;`.
    Inline { semi: Span, tokens: TokenStream },
}

impl Parse for Invocation {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut attrs = Vec::new();
        let mut krate = None;
        for attr in input.call(Attribute::parse_outer)? {
            if attr.path().is_ident("cnnc") {
                krate = Some(attr.parse_args_with(|args: ParseStream<'_>| {
                    args.parse::<Token![crate]>()?;
                    args.parse::<Token![=]>()?;
                    args.parse::<Path>()
                })?);
            } else {
                attrs.push(attr);
            }
        }
        let vis = input.parse()?;
        let name = input.parse()?;
        let spec = if input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            let path = input.parse()?;
            if input.peek(Token![,]) {
                input.parse::<Token![,]>()?;
            }
            if !input.is_empty() {
                return Err(input.error("unexpected tokens after the spec path"));
            }
            Spec::File(path)
        } else if input.peek(Token![;]) {
            let semi = input.parse::<Token![;]>()?;
            Spec::Inline {
                semi: semi.span,
                tokens: input.parse()?,
            }
        } else {
            return Err(input.error(
                "expected `, \"path/to/spec.yaml\"` or `;` followed by the spec in the cnnc DSL",
            ));
        };
        Ok(Invocation {
            attrs,
            krate,
            vis,
            name,
            spec,
        })
    }
}

impl Invocation {
    fn options(&self, source: String) -> Options {
        let mut options = Options::new(self.name.clone(), source);
        options.vis = self.vis.clone();
        options.attrs = self.attrs.clone();
        if let Some(krate) = &self.krate {
            options.krate = krate.clone();
        }
        options
    }

    fn expand(&self) -> TokenStream {
        match &self.spec {
            Spec::File(path) => self.expand_file(path),
            Spec::Inline { semi, tokens } => self.expand_inline(*semi, tokens.clone()),
        }
    }

    fn expand_file(&self, literal: &LitStr) -> TokenStream {
        let at = literal.span();
        let relative = literal.value();
        let error = |message: String| syn::Error::new(at, message).to_compile_error();
        let Some(root) = std::env::var_os("CARGO_MANIFEST_DIR") else {
            return error(format!(
                "cannot resolve `{relative}`: CARGO_MANIFEST_DIR is not set (spec paths are relative \
                 to the calling crate's root; build with cargo)"
            ));
        };
        let path = FsPath::new(&root).join(&relative);
        let Some(format) = Format::from_path(&path) else {
            return error(format!(
                "cannot tell the language of `{relative}`: expected a .yaml, .yml or .cnn file"
            ));
        };
        let Some(absolute) = path.to_str() else {
            return error(format!("the path of `{relative}` is not valid UTF-8"));
        };
        // Rebuild whenever the spec changes, even when it is wrong now.
        let track = quote!(
            const _: &[u8] = include_bytes!(#absolute);
        );
        let text = match cnnc_spec::read_text(&path) {
            Ok(text) => text,
            Err(cnnc_spec::Error::Io { error: err, .. }) => {
                return error(format!(
                    "cannot read spec `{relative}` (relative to the crate root, CARGO_MANIFEST_DIR): {err}"
                ));
            }
            Err(err @ cnnc_spec::Error::NotUtf8 { .. }) => {
                let err = error(err.to_string());
                return quote!(#err #track);
            }
            Err(err) => return error(err.to_string()),
        };
        let source = Source::new(relative.clone(), text, format);
        let body = match cnnc_spec::compile(&source) {
            Ok((model, warned)) => {
                let model = match generate(&model, &self.options(relative.clone())) {
                    Ok(tokens) => tokens,
                    Err(err) => error(format!("cannot generate a model from `{relative}`: {err}")),
                };
                let warned = warnings(&warned, &source, |_| at);
                quote!(#model #warned)
            }
            Err(found) => diagnostics(&found, &source, |_| at),
        };
        quote!(#body #track)
    }

    fn expand_inline(&self, semi: Span, tokens: TokenStream) -> TokenStream {
        let file = self.name.span().file();
        let layout = Layout::of(tokens);
        let source = Source::new(file.clone(), layout.text.clone(), Format::Dsl);
        let at = |d: &Diagnostic| layout.span_of(d.span.range()).unwrap_or(semi);
        match cnnc_spec::compile(&source) {
            Ok((model, warned)) => {
                let model = match generate(&model, &self.options(file)) {
                    Ok(tokens) => tokens,
                    Err(err) => syn::Error::new(
                        self.name.span(),
                        format!("cannot generate this model: {err}"),
                    )
                    .to_compile_error(),
                };
                let warned = warnings(&warned, &source, at);
                quote!(#model #warned)
            }
            Err(found) => diagnostics(&found, &source, at),
        }
    }
}

/// Inline DSL rebuilt as text with its original layout (each token at its line and column, so
/// `# comments` end at the line's end and diagnostics show the real line numbers), and where each
/// token landed in that text.
struct Layout {
    text: String,
    tokens: Vec<(Range<usize>, Span)>,
    line: usize,
    column: usize,
}

impl Layout {
    fn of(tokens: TokenStream) -> Layout {
        let mut layout = Layout {
            text: String::new(),
            tokens: Vec::new(),
            line: 1,
            column: 0,
        };
        layout.push_stream(tokens);
        layout
    }

    fn push_stream(&mut self, tokens: TokenStream) {
        for tree in tokens {
            match tree {
                TokenTree::Group(group) => {
                    let (open, close) = match group.delimiter() {
                        Delimiter::Parenthesis => ("(", ")"),
                        Delimiter::Bracket => ("[", "]"),
                        Delimiter::Brace => ("{", "}"),
                        Delimiter::None => ("", ""),
                    };
                    self.push(open, group.span_open());
                    self.push_stream(group.stream());
                    self.push(close, group.span_close());
                }
                other => self.push(&other.to_string(), other.span()),
            }
        }
    }

    /// Appends `text` at `span`'s position when that lies ahead, else after a space.
    fn push(&mut self, text: &str, span: Span) {
        if text.is_empty() {
            return;
        }
        let at = span.start();
        if (at.line, at.column) >= (self.line, self.column) {
            while self.line < at.line {
                self.text.push('\n');
                self.line += 1;
                self.column = 0;
            }
            while self.column < at.column {
                self.text.push(' ');
                self.column += 1;
            }
        } else {
            // No usable position (tokens from elsewhere): keep tokens apart.
            self.text.push(' ');
            self.column += 1;
        }
        let start = self.text.len();
        self.text.push_str(text);
        self.tokens.push((start..self.text.len(), span));
        for c in text.chars() {
            if c == '\n' {
                self.line += 1;
                self.column = 0;
            } else {
                self.column += 1;
            }
        }
    }

    /// The span of the token(s) covering `range` of the text (the next token when it falls
    /// between tokens, the last one past the end).
    fn span_of(&self, range: Range<usize>) -> Option<Span> {
        let first = self
            .tokens
            .iter()
            .position(|(r, _)| r.end > range.start)
            .or_else(|| self.tokens.len().checked_sub(1))?;
        let last = self
            .tokens
            .iter()
            .rposition(|(r, _)| r.start < range.end)
            .filter(|&last| last > first)
            .unwrap_or(first);
        let span = self.tokens[first].1;
        // `join` only works on nightly; on stable the first token stands for the range.
        Some(span.join(self.tokens[last].1).unwrap_or(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(input: &str) -> String {
        let tokens: TokenStream = input.parse().unwrap();
        expand(tokens).to_string()
    }

    #[test]
    fn inline_dsl_keeps_its_layout() {
        let tokens: TokenStream =
            "input (1, 4, 4)\n  flatten # to [16]\n  head: linear(out_features=2)"
                .parse()
                .unwrap();
        let layout = Layout::of(tokens);
        assert_eq!(
            layout.text,
            "input (1, 4, 4)\n  flatten # to [16]\n  head: linear(out_features=2)"
        );
        // `out_features` starts at byte 48; its token is found from any byte inside it.
        let at = layout.text.find("out_features").unwrap();
        let span = layout.span_of(at + 3..at + 5).unwrap();
        assert_eq!(span.start().line, 3);
        assert_eq!(span.start().column, 15);
    }

    #[test]
    fn inline_models_expand_and_errors_become_compile_errors() {
        let ok = expand_str("pub Tiny; input (1, 4, 4) flatten head: linear(out_features=2)");
        assert!(ok.contains("pub struct Tiny"), "{ok}");
        assert!(ok.contains("PARAM_COUNT : usize = 34"), "{ok}");
        let bad = expand_str(
            "Tiny; input (1, 4, 4) linear(out_features=2) linear(out_features=2, bogus=1)",
        );
        assert_eq!(bad.matches("compile_error").count(), 2, "{bad}");
        assert!(bad.contains("E0305") && bad.contains("E0202"), "{bad}");
    }

    #[test]
    fn the_facade_path_can_be_overridden() {
        let out = expand_str(
            "#[cnnc(crate = my::cnnc)] #[doc = \"Mine.\"] Tiny; input (1, 1, 1) flatten linear(out_features=1)",
        );
        assert!(out.contains("my :: cnnc :: runtime"), "{out}");
        assert_eq!(
            out.matches(":: cnnc ::").count(),
            out.matches("my :: cnnc ::").count()
        );
        assert!(out.contains("Mine."));
    }

    #[test]
    fn malformed_invocations_are_compile_errors() {
        assert!(expand_str("pub Tiny").contains("compile_error"));
        assert!(expand_str("Tiny, 42").contains("compile_error"));
        assert!(expand_str("Tiny, \"a.yaml\" extra").contains("unexpected tokens"));
        let missing = expand_str("Tiny, \"does/not/exist.yaml\"");
        assert!(
            missing.contains("cannot read spec `does/not/exist.yaml`"),
            "{missing}"
        );
        assert!(expand_str("Tiny, \"spec.txt\"").contains("cannot tell the language"));
        // An empty inline spec has no token to point at; the error lands on the `;`.
        let empty = expand_str("Tiny;");
        assert!(
            empty.contains("E0101") && empty.contains("compile_error"),
            "{empty}"
        );
    }
}

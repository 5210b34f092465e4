//! The cnnc spec language: YAML and DSL front-ends, one IR carrying source spans, shape inference
//! and checking, and rustc-style diagnostics. Knows nothing of numerics.
//!
//! ```
//! use cnnc_spec::{Format, Source};
//!
//! let source = Source::new("tiny.cnn", "input (1, 8, 8)\nconv2d(out_channels=4, kernel_size=3)\nflatten\nlinear(out_features=2)\n", Format::Dsl);
//! let (model, warnings) = cnnc_spec::compile(&source).expect("a valid spec");
//! assert!(warnings.is_empty());
//! assert_eq!(model.total_params(), 4 * 9 + 4 + 4 * 6 * 6 * 2 + 2);
//! ```

mod ast;
mod check;
mod comments;
mod diag;
mod dsl;

mod expr;
mod fmt;
mod front_errors;
mod resolved;
mod schema;
mod span;
mod suggest;
mod yaml;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use ast::{
    Arg, BinOp, Block, Comments, Expr, ExprKind, Ident, Layer, Model, ModelComments, Param, Value,
    ValueKind,
};
pub use check::{Checked, check};
pub use cnnc_core::Shape;
pub use cnnc_core::geometry::{Slide, Window};
pub use cnnc_core::{
    self as core, BatchNorm2dConfig, CheckedLayer, Conv2dConfig, LayerConfig, LayerKind,
    LinearConfig, Model as CoreModel, Pair, Pool2dConfig, TensorInfo, TensorRole,
};
pub use diag::{
    Code, Diagnostic, Edit, Fix, FixError, JsonDiagnostic, JsonEdit, JsonFix, Label, MAX_SHOWN,
    Severity, Shown, apply_fixes, render, render_all,
};
pub use dsl::parse_dsl;
pub use fmt::{to_dsl, to_yaml};
pub use resolved::CheckedModel;
pub use schema::json_schema;
pub use span::{Format, LineCol, Source, Span};
pub use yaml::parse_yaml;

/// Largest spec text accepted, in bytes (1 MiB).
pub const MAX_SOURCE_BYTES: usize = 1 << 20;
/// Deepest nesting of lists/mappings accepted in either language.
pub const MAX_NESTING: usize = 16;
pub use cnnc_core::{MAX_DIM, MAX_ELEMENTS, MAX_POOL_WINDOW};
/// Most layers a model may have.
pub const MAX_LAYERS: usize = 10_000;

/// Errors of the convenience entry points that read files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read spec {path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The path names a directory, not a spec file.
    #[error("cannot read spec {path}: it is a directory; pass a .yaml, .yml or .cnn file")]
    Directory {
        /// The directory.
        path: PathBuf,
    },
    /// The file is not UTF-8 text.
    #[error(
        "spec {path} is not UTF-8 text: byte 0x{byte:02x} at line {line}, column {column} is not \
         valid UTF-8; save the file as UTF-8"
    )]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The first byte that is not valid UTF-8.
        byte: u8,
        /// Its line, from 1.
        line: usize,
        /// Its column in characters, from 1.
        column: usize,
    },
    /// The file name does not say which language it is in.
    #[error("cannot tell the language of {path}: expected a .yaml, .yml or .cnn file")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The spec has errors; `rendered` holds them as `cnnc check` prints them.
    #[error("spec {file} has {count} error(s):\n{rendered}")]
    Invalid {
        /// The file's display name.
        file: String,
        /// Number of errors.
        count: usize,
        /// Every diagnostic, rendered without colour.
        rendered: String,
    },
}

/// Parses a spec in the language its [`Source`] says, into the IR. Fails with every syntax
/// and structure diagnostic found.
pub fn parse(source: &Source) -> Result<Model, Vec<Diagnostic>> {
    let text = source.text();
    if text.len() > MAX_SOURCE_BYTES {
        return Err(vec![front_errors::FrontError::SourceTooLarge.render()]);
    }
    match source.format() {
        Format::Yaml => parse_yaml(text),
        Format::Dsl => parse_dsl(text),
    }
}

/// Parses and checks a spec: the complete model with its warnings, or every diagnostic.
pub fn compile(source: &Source) -> Result<(CheckedModel, Vec<Diagnostic>), Vec<Diagnostic>> {
    check(&parse(source)?).into_result()
}

/// Reads, parses and checks the spec at `path` (language from its extension); warnings are
/// dropped. For tools that want a model or a message, like code generation.
pub fn load(path: &Path) -> Result<CheckedModel, Error> {
    let format = Format::from_path(path).ok_or_else(|| Error::UnknownFormat {
        path: path.to_owned(),
    })?;
    let text = read_text(path)?;
    let source = Source::new(path.display().to_string(), text, format);
    compile(&source)
        .map(|(model, _)| model)
        .map_err(|diagnostics| Error::Invalid {
            file: source.name().to_owned(),
            count: diagnostics.iter().filter(|d| d.is_error()).count(),
            rendered: render_all(&diagnostics, &source, false),
        })
}

/// Reads the spec text at `path`, never more than [`MAX_SOURCE_BYTES`] + 1 bytes, so that a huge
/// file costs no more than the limit. A file over the limit comes back cut (and lossily decoded)
/// for [`parse`] to refuse with its position; any other file must be UTF-8.
pub fn read_text(path: &Path) -> Result<String, Error> {
    let io = |error| Error::Io {
        path: path.to_owned(),
        error,
    };
    let file = File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.is_dir() {
        return Err(Error::Directory {
            path: path.to_owned(),
        });
    }
    read_text_from(file, path)
}

/// [`read_text`] for any reader (standard input, say), with `path` naming it in errors.
pub fn read_text_from(reader: impl Read, path: &Path) -> Result<String, Error> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| Error::Io {
            path: path.to_owned(),
            error,
        })?;
    if bytes.len() > MAX_SOURCE_BYTES {
        // The cut may split a character; the parser rejects the size whatever the encoding.
        return Ok(String::from_utf8_lossy(&bytes).into_owned());
    }
    String::from_utf8(bytes).map_err(|err| {
        let bytes = err.as_bytes();
        let valid = err.utf8_error().valid_up_to();
        // Everything before `valid` is UTF-8, so its last line counts characters.
        let before = String::from_utf8_lossy(&bytes[..valid]);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Error::NotUtf8 {
            path: path.to_owned(),
            byte: bytes[valid],
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    })
}

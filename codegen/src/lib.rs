//! Turns a checked cnnc spec into Rust tokens: exactly what `cnn_model!` expands to and what
//! `cnnc codegen` prints (the macro adds one deprecated constant per spec warning, so that
//! `cargo build` shows it; `cnnc codegen` prints warnings to standard error instead). The proc-macro crate is a shim over [`expand`]; everything here works on
//! `proc_macro2` tokens, so it is tested without a compiler.
//!
//! ```
//! use cnnc_spec::{Format, Source};
//!
//! let source = Source::new("tiny.cnn", "input (1, 4, 4)\nflatten\nlinear(out_features=2)\n", Format::Dsl);
//! let (model, _) = cnnc_spec::compile(&source).expect("a valid spec");
//! let name = cnnc_codegen::type_name("Tiny").expect("an identifier");
//! let code = cnnc_codegen::to_source(&model, &cnnc_codegen::Options::new(name, "tiny.cnn"))
//!     .expect("a flat output");
//! assert!(code.contains("pub struct Tiny"));
//! ```

mod diagnostics;
mod error;
mod expand;
mod graph;
mod model;
mod names;
mod source;

pub use error::Error;
pub use expand::expand;
pub use model::{Options, generate};
pub use names::type_name;
pub use source::to_source;

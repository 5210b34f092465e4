//! cnnc: a compiler for declarative CNN specs. This facade crate is all a user depends on: it
//! re-exports the `cnn_model!` macro and the runtime that generated models run on.

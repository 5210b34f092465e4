//! The `cnn_model!` procedural macro: a thin shim over `cnnc-spec` and `cnnc-codegen`.

//! Turns a checked cnnc spec into Rust tokens: exactly what `cnn_model!` expands to and what
//! `cnnc codegen` prints.

//! cnnc's bridges to other tools, each a real format read or written by its real tools: ONNX
//! export ([`export`]) and import ([`import`]) through ONNX's own protobuf messages ([`proto`]),
//! and a PyTorch `nn.Module` with a torchrun training script ([`pytorch`]). It reads checked
//! models ([`cnnc_core::Model`]) and plain tensors, never the runtime, so the library build of
//! `cnn_model!` users does not carry it (the facade's `interop` feature, on for the CLI).

#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto;

pub mod export;
pub mod import;
pub mod pytorch;

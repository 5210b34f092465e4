//! The code generator's one error type: a checked model it cannot turn into Rust.

/// Why a model or its options cannot be generated as Rust.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The model has no layers.
    #[error("the model has no layers")]
    NoLayers,
    /// The last layer outputs an image; generated models return a flat vector of logits.
    #[error(
        "layer `{layer}` ends the model with an image {shape}, but a generated model returns a flat \
         vector of logits: end it with flatten and linear"
    )]
    ImageOutput {
        /// The last layer.
        layer: String,
        /// Its per-sample output shape.
        shape: String,
    },
    /// A layer's shapes or arguments contradict each other (a model not produced by the checker).
    #[error("layer `{layer}`: {message}")]
    Inconsistent {
        /// The layer.
        layer: String,
        /// What does not fit.
        message: String,
    },
    /// The requested type name is not a Rust identifier.
    #[error("`{name}` is not a valid Rust type name")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The generated tokens did not parse back as a Rust file (a bug in cnnc).
    #[error("generated code does not parse (a bug in cnnc): {0}")]
    Unparsable(String),
}

//! The checked model the checker returns: a [`Model`] of the shared layer table (built by its
//! checked constructor, so its shapes chain by construction) and where each layer is written.
//! Later stages (code generation, the executor, `summary`) read it without re-deriving anything.

use std::ops::Deref;

use cnnc_core::Model;

use crate::span::Span;

/// A checked model: every layer resolved, in order, with its place in the source.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedModel {
    model: Model,
    spans: Vec<Span>,
}

impl CheckedModel {
    /// `model` with the span of each of its layers (built by the checker only).
    pub(crate) fn new(model: Model, spans: Vec<Span>) -> Self {
        debug_assert_eq!(model.layers().len(), spans.len());
        CheckedModel { model, spans }
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, without its spans.
    pub fn into_model(self) -> Model {
        self.model
    }

    /// Where layer `index` is written.
    pub fn span(&self, index: usize) -> Span {
        self.spans.get(index).copied().unwrap_or_default()
    }
}

/// A checked model reads as the [`Model`] it holds.
impl Deref for CheckedModel {
    type Target = Model;

    fn deref(&self) -> &Model {
        &self.model
    }
}

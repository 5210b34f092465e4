//! The cnnc spec language: YAML and DSL front-ends, one IR carrying source spans, shape inference
//! and checking, and rustc-style diagnostics. Knows nothing of numerics.

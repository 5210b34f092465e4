//! Expansion (in progress).

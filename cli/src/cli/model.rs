//! A spec turned into a runnable network for the commands that execute models, and the metadata
//! cnnc stores beside the weights (class names, normalisation, dataset) so that `eval` and
//! `predict` prepare inputs exactly as training did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cnnc::data::ImageShape;
use cnnc::runtime::Network;
use cnnc::runtime::config::NetworkDef;
use cnnc::runtime::weights::{self, LoadProblem};
use cnnc::spec::CheckedModel;
use sha2::{Digest, Sha256};

pub use cnnc::train::checkpoint::{WeightsMeta, spec_hash};

/// A checked spec and its runtime description.
pub struct Spec {
    /// The file it was read from.
    pub path: PathBuf,
    /// The checked model.
    pub checked: CheckedModel,
    /// Its layers and input, as the executor is built from them.
    pub def: NetworkDef,
    /// [`spec_hash`] of the model: what checkpoints and weights record.
    pub hash: String,
    /// [`legacy_spec_hash`] of the model, which files written before the canonical form carry.
    pub legacy_hash: String,
}

impl Spec {
    /// Reads and checks the spec at `path` (a spec with errors exits 1 with its diagnostics).
    pub fn load(path: &Path) -> anyhow::Result<Spec> {
        let checked = cnnc::spec::load(path)?;
        let def = checked.def();
        let hash = spec_hash(&checked);
        let legacy_hash = legacy_spec_hash(&def);
        Ok(Spec {
            path: path.to_owned(),
            checked,
            def,
            hash,
            legacy_hash,
        })
    }

    /// Whether `hash`, read from a checkpoint or weights file, identifies this model (in the
    /// canonical form's hash or, for files written before it, the legacy one).
    pub fn is_hash(&self, hash: &str) -> bool {
        hash == self.hash || hash == self.legacy_hash
    }

    /// The per-sample input shape.
    pub fn input(&self) -> ImageShape {
        let [c, h, w] = self.def.input;
        ImageShape::new(c, h, w)
    }

    /// A network with the seeded default initialisation.
    pub fn network(&self, seed: u64) -> anyhow::Result<Network> {
        Network::from_model(&self.checked, seed)
            .with_context(|| format!("cannot build the network of {}", self.path.display()))
    }
}

/// The identity checkpoints had before the canonical form: SHA-256 of the layer descriptions'
/// `Debug` text. Still accepted so that those checkpoints resume; never written. Arguments added
/// since (conv2d's `groups` and `padding_mode`, a layer's `inputs`, the pools' `dilation`,
/// `count_include_pad` and `divisor_override`, flatten's dimensions, batch norm's `affine` and
/// `track_running_stats`, and its momentum as an option) are left out at their defaults, the only
/// values such checkpoints can have.
pub fn legacy_spec_hash(def: &NetworkDef) -> String {
    let text = without_padding_end(&format!("{def:?}"));
    let text = text
        .replace(", groups: 1,", ",")
        .replace(", padding_mode: Zeros", "")
        .replace(", inputs: []", "")
        .replace(
            ", dilation: [1, 1], count_include_pad: true, divisor_override: None",
            "",
        )
        .replace("Flatten { start_dim: 1, end_dim: -1 }", "Flatten")
        .replace(", affine: true, track_running_stats: true", "");
    let text = unwrap_momentum(&text);
    hex(&Sha256::digest(text.as_bytes()))
}

/// A convolution's `, padding_end: [a, b]` left out where it equals its `padding` (it always
/// did before uneven `same` padding; an uneven one stays, so such a model matches no old hash).
fn without_padding_end(text: &str) -> String {
    const END: &str = ", padding_end: ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(END) {
        let (before, after) = rest.split_at(at);
        let value_len = after[END.len()..].find(']').map_or(0, |close| close + 1);
        let value = &after[END.len()..END.len() + value_len];
        out.push_str(before);
        if value.is_empty() || !before.ends_with(&format!("padding: {value}")) {
            out.push_str(&after[..END.len() + value_len]);
        }
        rest = &after[END.len() + value_len..];
    }
    out.push_str(rest);
    out
}

/// `momentum: Some(0.1)` written as it was before momentum became optional, `momentum: 0.1`.
fn unwrap_momentum(text: &str) -> String {
    const OPTIONAL: &str = "momentum: Some(";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(OPTIONAL) {
        out.push_str(&rest[..at]);
        out.push_str("momentum: ");
        rest = &rest[at + OPTIONAL.len()..];
        match rest.find(')') {
            Some(close) => {
                out.push_str(&rest[..close]);
                rest = &rest[close + 1..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loads `path` into `net` strictly, naming the spec when the weights do not fit it, and returns
/// the cnnc metadata found in the file.
pub fn load_weights(net: &mut Network, path: &Path, spec: &Spec) -> anyhow::Result<WeightsMeta> {
    let metadata = weights::load(net, path).map_err(|err| {
        let fits_not = err.problems.iter().any(|p| {
            matches!(
                p,
                LoadProblem::Missing { .. }
                    | LoadProblem::Unexpected { .. }
                    | LoadProblem::Shape { .. }
                    | LoadProblem::Dtype { .. }
            )
        });
        let err = anyhow::Error::new(err);
        if fits_not {
            err.context(format!(
                "the weights in {} do not fit the spec {}",
                path.display(),
                spec.path.display()
            ))
        } else {
            err
        }
    })?;
    let meta = read_meta(&metadata);
    if let Some(hash) = &meta.spec_hash
        && !spec.is_hash(hash)
    {
        eprintln!(
            "notice: {} was saved from a different spec than {} (same parameter shapes)",
            path.display(),
            spec.path.display()
        );
    }
    Ok(meta)
}

/// The cnnc metadata in a weights file's `map`, with a notice for each malformed entry dropped.
pub fn read_meta(map: &BTreeMap<String, String>) -> WeightsMeta {
    let (meta, notices) = WeightsMeta::read(map);
    for notice in notices {
        let why = super::terminal::printable(&notice);
        eprintln!("notice: ignoring the weights' metadata {why}");
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_momentum_reads_as_it_was_written_before() {
        assert_eq!(
            unwrap_momentum("BatchNorm2d(C { eps: 1e-5, momentum: Some(0.1) }), x: Some(2)"),
            "BatchNorm2d(C { eps: 1e-5, momentum: 0.1 }), x: Some(2)"
        );
        assert_eq!(unwrap_momentum("momentum: None"), "momentum: None");
    }

    #[test]
    fn an_even_padding_end_reads_as_it_was_written_before() {
        assert_eq!(
            without_padding_end("C { padding: [1, 2], padding_end: [1, 2], dilation: [1, 1] }"),
            "C { padding: [1, 2], dilation: [1, 1] }"
        );
        // `same` with an odd total keeps it: no checkpoint from before can match.
        let uneven = "C { padding: [0, 1], padding_end: [1, 1], dilation: [1, 1] } padding: [2, 2]";
        assert_eq!(without_padding_end(uneven), uneven);
    }
}

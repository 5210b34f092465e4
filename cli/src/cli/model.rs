//! A spec turned into a runnable network for the commands that execute models, and the metadata
//! cnnc stores beside the weights (class names, normalisation, dataset) so that `eval` and
//! `predict` prepare inputs exactly as training did.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cnnc_data::{DatasetKind, ImageShape, Normalization};
use cnnc_runtime::Network;
use cnnc_runtime::config::NetworkDef;
use cnnc_runtime::weights::{self, LoadProblem};
use cnnc_spec::core::canon;
use cnnc_spec::{CheckedModel, CoreModel};
use sha2::{Digest, Sha256};

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
        let checked = cnnc_spec::load(path)?;
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

/// SHA-256 of the model's canonical form ([`cnnc_spec::core::canon`]: every layer's name and
/// the arguments that differ from their defaults, and the input shape), in hex. Comments,
/// formatting and the model's name do not change it; anything that changes what the weights mean
/// does; a new argument with a default does not.
pub fn spec_hash(model: &CoreModel) -> String {
    hex(&Sha256::digest(canon::canonical(model).as_bytes()))
}

/// The identity checkpoints had before the canonical form: SHA-256 of the layer descriptions'
/// `Debug` text. Still accepted so that those checkpoints resume; never written. Arguments added
/// since (conv2d's `groups` and `padding_mode`, a layer's `inputs`, the pools' `dilation`,
/// `count_include_pad` and `divisor_override`, flatten's dimensions, batch norm's `affine` and
/// `track_running_stats`, and its momentum as an option) are left out at their defaults, the only
/// values such checkpoints can have.
pub fn legacy_spec_hash(def: &NetworkDef) -> String {
    let text = format!("{def:?}")
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
    let meta = WeightsMeta::from_map(&metadata);
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

/// What cnnc records in a weights file's safetensors metadata, all optional: files written by
/// PyTorch carry none of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightsMeta {
    /// [`spec_hash`] of the spec trained.
    pub spec_hash: Option<String>,
    /// Class name of each output.
    pub classes: Option<Vec<String>>,
    /// Normalisation applied to the training images.
    pub normalization: Option<Normalization>,
    /// The dataset trained on.
    pub dataset: Option<DatasetKind>,
    /// The dataset named by the metadata when cnnc does not know it (then `dataset` is `None`).
    pub unknown_dataset: Option<String>,
    /// Where it was read from.
    pub data_dir: Option<PathBuf>,
    /// Shape of the dataset's images (before bridging to the model input).
    pub image_shape: Option<ImageShape>,
    /// Optimizer steps taken when saved.
    pub step: Option<u64>,
}

const SPEC_HASH: &str = "cnnc.spec_hash";
const CLASSES: &str = "cnnc.classes";
const NORMALIZATION: &str = "cnnc.normalization";
const DATASET: &str = "cnnc.dataset";
const DATA_DIR: &str = "cnnc.data_dir";
const IMAGE_SHAPE: &str = "cnnc.image_shape";
const STEP: &str = "cnnc.step";

impl WeightsMeta {
    /// The safetensors metadata strings (values JSON-encoded where not plain text). `format: pt`
    /// is what `safetensors.torch.save_file` writes.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        map.insert("format".to_owned(), "pt".to_owned());
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        fn json<T: serde::Serialize>(value: &T) -> String {
            // Plain data (strings, numbers, vectors of them) always serialises.
            serde_json::to_string(value).unwrap_or_default()
        }
        put(SPEC_HASH, self.spec_hash.clone());
        put(CLASSES, self.classes.as_ref().map(json));
        put(NORMALIZATION, self.normalization.as_ref().map(json));
        put(DATASET, self.dataset.map(|d| d.name().to_owned()));
        put(
            DATA_DIR,
            self.data_dir.as_ref().map(|d| d.display().to_string()),
        );
        put(IMAGE_SHAPE, self.image_shape.as_ref().map(json));
        put(STEP, self.step.map(|s| s.to_string()));
        map
    }

    /// Reads what it can from `map`; a malformed entry is dropped with a notice.
    pub fn from_map(map: &BTreeMap<String, String>) -> WeightsMeta {
        fn parsed<T: serde::de::DeserializeOwned>(
            map: &BTreeMap<String, String>,
            key: &str,
        ) -> Option<T> {
            let text = map.get(key)?;
            match serde_json::from_str(text) {
                Ok(value) => Some(value),
                Err(err) => {
                    let why = super::terminal::printable(&format!("`{key}`: {err}"));
                    eprintln!("notice: ignoring the weights' metadata {why}");
                    None
                }
            }
        }
        WeightsMeta {
            spec_hash: map.get(SPEC_HASH).cloned(),
            classes: parsed(map, CLASSES),
            normalization: parsed(map, NORMALIZATION),
            dataset: map.get(DATASET).and_then(|n| DatasetKind::from_name(n)),
            unknown_dataset: map
                .get(DATASET)
                .filter(|n| DatasetKind::from_name(n).is_none())
                .cloned(),
            data_dir: map.get(DATA_DIR).map(PathBuf::from),
            image_shape: parsed(map, IMAGE_SHAPE),
            step: map.get(STEP).and_then(|s| s.parse().ok()),
        }
    }
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
    fn metadata_round_trips() {
        let meta = WeightsMeta {
            spec_hash: Some("abc".into()),
            classes: Some(vec!["cat".into(), "dog".into()]),
            normalization: Some(Normalization::fashion_mnist()),
            dataset: Some(DatasetKind::FashionMnist),
            unknown_dataset: None,
            data_dir: Some("/data/fm".into()),
            image_shape: Some(ImageShape::new(1, 28, 28)),
            step: Some(42),
        };
        assert_eq!(WeightsMeta::from_map(&meta.to_map()), meta);
        assert_eq!(
            WeightsMeta::from_map(&BTreeMap::new()),
            WeightsMeta::default()
        );
        let unknown = BTreeMap::from([(DATASET.to_owned(), "imagenet".to_owned())]);
        let meta = WeightsMeta::from_map(&unknown);
        assert_eq!(meta.dataset, None);
        assert_eq!(meta.unknown_dataset.as_deref(), Some("imagenet"));
    }
}

//! What cnnc records in a weights file's safetensors metadata beside the tensors (class names,
//! normalisation, dataset, the spec's identity and the optimizer step), so that `cnnc eval` and
//! `predict` prepare inputs exactly as training did, and [`spec_hash`], the spec identity
//! checkpoints are keyed on.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cnnc_core::canon;
use cnnc_data::{Dataset, DatasetKind, ImageShape, Normalization};
use sha2::{Digest, Sha256};

/// SHA-256 of the model's canonical form ([`cnnc_core::canon`]: every layer's name and the
/// arguments that differ from their defaults, and the input shape), in hex: what checkpoints and
/// weights files record as `spec_hash`, and what `cnnc train --resume` checks. Comments,
/// formatting and the model's name do not change it; anything that changes what the weights mean
/// does; a new argument with a default does not. A checked spec read at run time (feature
/// `spec`: `cnnc::spec::load`) gives the model.
pub fn spec_hash(model: &cnnc_core::Model) -> String {
    let digest = Sha256::digest(canon::canonical(model).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
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

    /// The normalisation to prepare `dataset`'s images with for weights carrying this metadata:
    /// the one they were trained with when it fits the images' channels, else the dataset's own
    /// (`cnnc eval`'s rule).
    pub fn normalization_for(&self, dataset: &Dataset) -> Normalization {
        self.normalization
            .clone()
            .filter(|n| n.mean.len() == dataset.shape().channels)
            .unwrap_or_else(|| dataset.normalization().clone())
    }

    /// Reads what it can from `map`, dropping malformed entries silently ([`WeightsMeta::read`]
    /// says which).
    pub fn from_map(map: &BTreeMap<String, String>) -> WeightsMeta {
        WeightsMeta::read(map).0
    }

    /// Reads what it can from `map`, and a notice for each malformed entry it dropped
    /// (`` `cnnc.classes`: expected a sequence ``; the text is the file's, not escaped).
    pub fn read(map: &BTreeMap<String, String>) -> (WeightsMeta, Vec<String>) {
        fn parsed<T: serde::de::DeserializeOwned>(
            map: &BTreeMap<String, String>,
            key: &str,
            notices: &mut Vec<String>,
        ) -> Option<T> {
            let text = map.get(key)?;
            serde_json::from_str(text)
                .map_err(|err| notices.push(format!("`{key}`: {err}")))
                .ok()
        }
        let mut notices = Vec::new();
        let meta = WeightsMeta {
            spec_hash: map.get(SPEC_HASH).cloned(),
            classes: parsed(map, CLASSES, &mut notices),
            normalization: parsed(map, NORMALIZATION, &mut notices),
            dataset: map.get(DATASET).and_then(|n| DatasetKind::from_name(n)),
            unknown_dataset: map
                .get(DATASET)
                .filter(|n| DatasetKind::from_name(n).is_none())
                .cloned(),
            data_dir: map.get(DATA_DIR).map(PathBuf::from),
            image_shape: parsed(map, IMAGE_SHAPE, &mut notices),
            step: map.get(STEP).and_then(|s| s.parse().ok()),
        };
        (meta, notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_trained_normalisation_is_used_where_it_fits_the_images() {
        let grey = |normalization| {
            let names = vec!["a".to_owned(), "b".to_owned()];
            let shape = ImageShape::new(1, 2, 2);
            Dataset::new(shape, vec![0; 8], vec![0, 1], names, normalization).expect("a dataset")
        };
        let dataset = grey(Normalization::mnist());
        let trained = WeightsMeta {
            normalization: Some(Normalization::fashion_mnist()),
            ..WeightsMeta::default()
        };
        assert_eq!(
            trained.normalization_for(&dataset),
            Normalization::fashion_mnist()
        );
        let rgb = WeightsMeta {
            normalization: Some(Normalization::cifar10()),
            ..WeightsMeta::default()
        };
        assert_eq!(rgb.normalization_for(&dataset), Normalization::mnist());
        assert_eq!(
            WeightsMeta::default().normalization_for(&dataset),
            Normalization::mnist()
        );
    }

    #[test]
    fn malformed_entries_are_dropped_with_a_notice() {
        let map = BTreeMap::from([
            (CLASSES.to_owned(), "[1, 2]".to_owned()),
            (NORMALIZATION.to_owned(), "{".to_owned()),
            (STEP.to_owned(), "7".to_owned()),
        ]);
        let (meta, notices) = WeightsMeta::read(&map);
        assert_eq!(
            (meta.classes, meta.normalization, meta.step),
            (None, None, Some(7))
        );
        assert_eq!(notices.len(), 2, "{notices:?}");
        assert!(notices[0].starts_with("`cnnc.classes`: "), "{notices:?}");
        assert!(
            notices[1].starts_with("`cnnc.normalization`: "),
            "{notices:?}"
        );
    }
}

//! `--dataset`, `--data` and `--download`: finding a dataset's files (downloading them when asked),
//! and preparing its images for a model, with a notice when they have to be bridged.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cnnc_data::{
    DataError, Dataset, DatasetKind, ImageShape, Normalization, SAMPLE_DIR, Splits, Transform,
};

use super::job::refuse;

/// The datasets `--dataset` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetName {
    /// CIFAR-10 binary batches (data_batch_1.bin … test_batch.bin).
    Cifar10,
    /// Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, …).
    FashionMnist,
    /// MNIST IDX files.
    Mnist,
    /// Your own images: DIR/train/<class>/*.png|jpg and DIR/test/<class>/*.
    Folder,
    /// The Fashion-MNIST sample shipped with cnnc (6,000 + 1,000 images).
    Sample,
}

impl From<DatasetName> for DatasetKind {
    fn from(name: DatasetName) -> DatasetKind {
        match name {
            DatasetName::Cifar10 => DatasetKind::Cifar10,
            DatasetName::FashionMnist => DatasetKind::FashionMnist,
            DatasetName::Mnist => DatasetKind::Mnist,
            DatasetName::Folder => DatasetKind::Folder,
            DatasetName::Sample => DatasetKind::Sample,
        }
    }
}

/// Where the data comes from.
#[derive(Clone, Debug, clap::Args)]
pub struct DataArgs {
    /// The dataset [default: sample, or the one the weights were trained on].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Folder holding the dataset's files [default: the shipped sample, or
    /// ~/.cache/cnnc/<dataset>].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Fetch cifar10, fashion-mnist or mnist from the canonical address into the data folder
    /// when it is not there (checksums verified).
    #[arg(long)]
    pub download: bool,
    /// With --download, fetch from a mirror of the canonical files instead, laid out as
    /// URL/<dataset>/<file name> (e.g. URL/fashion-mnist/train-images-idx3-ubyte.gz); its files
    /// must match the published checksums [env: CNNC_DOWNLOAD_MIRROR].
    #[arg(long, value_name = "URL", requires = "download")]
    pub mirror: Option<String>,
}

/// The environment variable that sets `--mirror` for every command.
pub const MIRROR_ENV: &str = "CNNC_DOWNLOAD_MIRROR";

impl DataArgs {
    /// The mirror to download from: `--mirror`, else a non-empty `CNNC_DOWNLOAD_MIRROR`.
    pub fn mirror(&self) -> Option<String> {
        self.mirror.clone().or_else(|| {
            std::env::var(MIRROR_ENV)
                .ok()
                .filter(|url| !url.trim().is_empty())
        })
    }
}

/// A dataset's two splits and where they were read from.
pub struct Loaded {
    /// The folder read (absolute).
    pub dir: PathBuf,
    /// Training and test images.
    pub splits: Splits,
}

/// Loads `kind` from `dir` (or its default folder) for a model whose input is `input`,
/// downloading it first (from `args`'s mirror, if any) when `args.download` is set and the files
/// are missing.
pub fn load(
    kind: DatasetKind,
    dir: Option<&Path>,
    args: &DataArgs,
    input: ImageShape,
) -> anyhow::Result<Loaded> {
    let download = args.download;
    let dir = match (kind, dir) {
        (_, Some(dir)) => dir.to_owned(),
        (DatasetKind::Sample, None) => PathBuf::from(SAMPLE_DIR),
        (DatasetKind::Folder, None) => {
            anyhow::bail!(
                "--dataset folder needs --data DIR, a folder with train/<class>/ and test/<class>/ \
                 sub-folders of PNG or JPEG images"
            )
        }
        (kind, None) => default_cache(kind),
    };
    if dir.exists() && !dir.is_dir() {
        anyhow::bail!(
            "{} is a file, not a folder; pass --data DIR, the folder that holds the dataset",
            dir.display()
        );
    }
    if download && matches!(kind, DatasetKind::Folder | DatasetKind::Sample) {
        anyhow::bail!("--download fetches cifar10, fashion-mnist or mnist, not {kind}");
    }
    let mirror = args.mirror().filter(|_| download);
    if let Some(url) = &mirror
        && let Err(err) = cnnc_data::download::mirrored_sources(kind, url)
    {
        // A usage problem like a bad flag (exit 2), whether or not a download is needed.
        anyhow::bail!("--mirror or {MIRROR_ENV}: {err}");
    }
    let splits = match kind.load_for(&dir, input) {
        Err(DataError::NotFound { .. }) if download => {
            let dir = match mirror {
                None => {
                    eprintln!("downloading {kind} into {} ...", dir.display());
                    cnnc_data::download::download(kind, &dir, None)?
                }
                Some(url) => {
                    eprintln!(
                        "downloading {kind} from the mirror {url} into {} ...",
                        dir.display()
                    );
                    cnnc_data::download::download(kind, &dir, Some(&url)).with_context(|| {
                        format!(
                            "cannot download {kind} from the mirror {url} (set by --mirror or \
                             {MIRROR_ENV}; it must serve the canonical files as \
                             {}/{kind}/<file name>)",
                            url.trim_end_matches('/')
                        )
                    })?
                }
            };
            kind.load_for(&dir, input)?
        }
        Err(err @ DataError::NotFound { .. }) if kind != DatasetKind::Sample => {
            return Err(anyhow::Error::new(err).context(format!(
                "cannot load {kind} (pass --download to fetch it into {}, or --data DIR)",
                dir.display()
            )));
        }
        other => other.with_context(|| format!("cannot load {kind} from {}", dir.display()))?,
    };
    let dir = std::path::absolute(&dir).unwrap_or(dir);
    Ok(Loaded { dir, splits })
}

/// Loads `kind` from `recorded`, the folder a weights file's metadata says it was read from, for
/// a model whose input is `input`. A file never chooses where cnnc writes: when `recorded` does
/// not hold the dataset, it is looked for (and, with `--download`, fetched) in the default folder,
/// as if nothing had been recorded.
pub fn load_recorded(
    kind: DatasetKind,
    recorded: &Path,
    args: &DataArgs,
    input: ImageShape,
) -> anyhow::Result<Loaded> {
    match kind.load_for(recorded, input) {
        Ok(splits) => Ok(Loaded {
            dir: std::path::absolute(recorded).unwrap_or_else(|_| recorded.to_owned()),
            splits,
        }),
        Err(DataError::NotFound { .. }) => {
            eprintln!(
                "notice: the weights were trained on {kind} read from {:?}, which does not hold \
                 it now; looking in the default folder (pass --data DIR to choose)",
                recorded.display().to_string()
            );
            load(kind, None, args, input)
        }
        Err(err) => Err(anyhow::Error::new(err).context(format!(
            "cannot load {kind} from {:?}, the folder the weights' metadata names (pass --data \
             DIR to choose another)",
            recorded.display().to_string()
        ))),
    }
}

/// `$XDG_CACHE_HOME/cnnc/<dataset>`, `~/.cache/cnnc/<dataset>`, or `./data/<dataset>` when
/// neither is set.
fn default_cache(kind: DatasetKind) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    match base {
        Some(base) => base.join("cnnc").join(kind.name()),
        None => PathBuf::from("data").join(kind.name()),
    }
}

/// The transform from `shape` images normalised with `normalization` to the model's `input`,
/// printing how images are bridged when they differ. Images that cannot be bridged exit 1.
pub fn transform(
    shape: ImageShape,
    normalization: &Normalization,
    input: ImageShape,
) -> anyhow::Result<Transform> {
    let transform = Transform::new(shape, normalization, input)?;
    if let Some(bridge) = transform.bridge() {
        eprintln!("notice: {bridge}");
    }
    Ok(transform)
}

/// Refuses a dataset with more classes than the model has outputs (its labels would not fit);
/// fewer classes are allowed with a notice, as PyTorch allows them.
pub fn check_classes(dataset: &Dataset, outputs: usize, what: &str) -> anyhow::Result<()> {
    let classes = dataset.num_classes();
    if classes > outputs {
        return Err(refuse(format!(
            "{what} has {classes} classes but the model has {outputs} outputs; give the last \
             linear layer out_features: {classes}"
        )));
    }
    if classes < outputs {
        eprintln!(
            "notice: {what} has {classes} classes, the model has {outputs} outputs; the extra \
             outputs are never a training target"
        );
    }
    Ok(())
}

/// Class names for every model output: the dataset's, then `output <k>` for any extra output.
pub fn output_names(classes: &[String], outputs: usize) -> Vec<String> {
    (0..outputs)
        .map(|k| {
            classes
                .get(k)
                .cloned()
                .unwrap_or_else(|| format!("output {k}"))
        })
        .collect()
}

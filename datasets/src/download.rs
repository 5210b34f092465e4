//! `--download`: fetching CIFAR-10, Fashion-MNIST and MNIST from their canonical addresses (or a
//! mirror of them) into a cache folder, verified against the publishers' MD5 checksums (feature
//! `download`).
//!
//! Writes are atomic: a file is downloaded to a hidden `.part` file beside its destination and
//! renamed into place only once its checksum matches, and an archive is extracted into a hidden
//! folder that is renamed into place when complete. A file already present with the right checksum
//! (or an already extracted archive) is not fetched again, so an offline machine whose cache was
//! filled by hand works as well.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use super::cifar::{CIFAR10_FOLDER, CIFAR10_URL};
use super::idx::FASHION_MNIST_URL;
use super::{DataError, DatasetKind};

/// Where torchvision fetches MNIST from (the original site no longer serves the files).
pub const MNIST_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";

/// No published file is near this size; a server sending more is refused.
const MAX_DOWNLOAD: u64 = 1 << 30;

/// One file to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Its address.
    pub url: String,
    /// The name it is saved under in the cache folder.
    pub file_name: String,
    /// Its MD5 checksum, lower-case hex, as published.
    pub md5: String,
    /// For a `.tar.gz` archive: the folder it holds, extracted into the cache folder (the archive
    /// itself is deleted afterwards).
    pub extracts_to: Option<String>,
}

impl Source {
    fn file(base: &str, name: &str, md5: &str) -> Self {
        Source {
            url: format!("{base}{name}"),
            file_name: name.to_owned(),
            md5: md5.to_owned(),
            extracts_to: None,
        }
    }
}

/// The canonical sources of a dataset; empty for [`DatasetKind::Folder`] and
/// [`DatasetKind::Sample`], which are never downloaded.
pub fn sources(kind: DatasetKind) -> Vec<Source> {
    let idx = |base: &str, md5: [&str; 4]| {
        [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ]
        .iter()
        .zip(md5)
        .map(|(name, md5)| Source::file(base, name, md5))
        .collect()
    };
    match kind {
        DatasetKind::Cifar10 => vec![Source {
            url: CIFAR10_URL.to_owned(),
            file_name: "cifar-10-binary.tar.gz".to_owned(),
            md5: "c32a1d4ab5d03f1284b67883e8d87530".to_owned(),
            extracts_to: Some(CIFAR10_FOLDER.to_owned()),
        }],
        DatasetKind::FashionMnist => idx(
            FASHION_MNIST_URL,
            [
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ],
        ),
        DatasetKind::Mnist => idx(
            MNIST_URL,
            [
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ],
        ),
        DatasetKind::Folder | DatasetKind::Sample => Vec::new(),
    }
}

/// The sources of `kind` as a mirror at `base` (an `http://` or `https://` address) serves
/// them: each file under its canonical name in a folder named after the dataset
/// (`{base}/fashion-mnist/train-images-idx3-ubyte.gz`, `{base}/cifar10/cifar-10-binary.tar.gz`),
/// since MNIST and Fashion-MNIST share file names. A mirror serves the publishers' files, so the
/// published checksums still apply: a file that differs is refused, as from the canonical host.
pub fn mirrored_sources(kind: DatasetKind, base: &str) -> Result<Vec<Source>, DataError> {
    let lower = base.to_ascii_lowercase();
    let host = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
        .unwrap_or_default();
    if host.is_empty() || host.starts_with('/') {
        return Err(DataError::Invalid {
            what: "download mirror",
            reason: format!(
                "`{base}` is not an http:// or https:// address (like \
                 http://mirror.example/datasets)"
            ),
        });
    }
    let base = base.trim_end_matches('/');
    Ok(sources(kind)
        .into_iter()
        .map(|source| Source {
            url: format!("{base}/{}/{}", kind.name(), source.file_name),
            ..source
        })
        .collect())
}

/// Fetches `kind` into `cache_dir` (one folder per dataset), unless already there, from its
/// canonical addresses or from `mirror` (see [`mirrored_sources`]), and returns the folder to load
/// it from with [`DatasetKind::load`].
///
/// Meant for when loading `cache_dir` failed with [`DataError::NotFound`]: files that load are
/// used as they are, whatever their compression (Debian's Fashion-MNIST files, for one, are
/// recompressed and so differ from the published checksums while holding the same data).
pub fn download(
    kind: DatasetKind,
    cache_dir: &Path,
    mirror: Option<&str>,
) -> Result<PathBuf, DataError> {
    let list = match mirror {
        Some(base) => mirrored_sources(kind, base)?,
        None => sources(kind),
    };
    download_sources(&list, cache_dir)?;
    Ok(cache_dir.to_path_buf())
}

/// Fetches every source into `dir`, verifying checksums and extracting archives.
pub fn download_sources(sources: &[Source], dir: &Path) -> Result<(), DataError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    for source in sources {
        if let Some(folder) = &source.extracts_to
            && dir.join(folder).is_dir()
        {
            continue;
        }
        let path = fetch(&agent, source, dir)?;
        if let Some(folder) = &source.extracts_to {
            extract(&path, folder, dir)?;
            std::fs::remove_file(&path).map_err(|e| DataError::io(&path, e))?;
        }
    }
    Ok(())
}

/// Downloads one file to `dir/file_name` unless it is already there with the right checksum.
fn fetch(agent: &ureq::Agent, source: &Source, dir: &Path) -> Result<PathBuf, DataError> {
    let dest = dir.join(&source.file_name);
    if dest.is_file() && md5_file(&dest)? == source.md5 {
        return Ok(dest);
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let part = dir.join(format!(".{}.{}.part", source.file_name, std::process::id()));
    let result = fetch_to(agent, source, dir, &part);
    let found = match result {
        Ok(found) => found,
        Err(e) => {
            // Best effort: the error being reported matters more than a leftover part file.
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    if found != source.md5 {
        let _ = std::fs::remove_file(&part);
        return Err(DataError::Checksum {
            url: source.url.clone(),
            expected: source.md5.clone(),
            found,
            dir: dir.to_path_buf(),
        });
    }
    std::fs::rename(&part, &dest).map_err(|e| DataError::io(&dest, e))?;
    sync_dir(dir).map_err(|e| DataError::io(dir, e))?;
    Ok(dest)
}

/// Makes the rename into `dir` durable (as `cnnc_runtime::weights` does for weights). Directories
/// cannot be opened for syncing everywhere, so this is a no-op off Unix.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Streams `source` into `part`, returning the MD5 of what was written.
fn fetch_to(
    agent: &ureq::Agent,
    source: &Source,
    dir: &Path,
    part: &Path,
) -> Result<String, DataError> {
    let download_error = |reason: String| DataError::Download {
        url: source.url.clone(),
        reason,
        dir: dir.to_path_buf(),
    };
    let response = agent
        .get(&source.url)
        .call()
        .map_err(|e| download_error(e.to_string()))?;
    let mut body = response
        .into_body()
        .into_with_config()
        .limit(MAX_DOWNLOAD)
        .reader();
    let mut file = File::create(part).map_err(|e| DataError::io(part, e))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(download_error(e.to_string())),
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| DataError::io(part, e))?;
    }
    file.sync_all().map_err(|e| DataError::io(part, e))?;
    Ok(hex(&hasher.finalize()))
}

/// Extracts `folder` from the `.tar.gz` at `archive` into `dir/folder`, atomically.
fn extract(archive: &Path, folder: &str, dir: &Path) -> Result<(), DataError> {
    let io = |e| DataError::io(archive, e);
    let staging = dir.join(format!(".extract.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    let file = File::open(archive).map_err(io)?;
    let gz = flate2::read::GzDecoder::new(BufReader::new(file));
    // `unpack` refuses entries that would land outside `staging` (absolute paths, `..`).
    let unpacked = tar::Archive::new(gz).unpack(&staging).map_err(io);
    let extracted = staging.join(folder);
    let result = unpacked.and_then(|()| {
        if extracted.is_dir() {
            std::fs::rename(&extracted, dir.join(folder)).map_err(|e| DataError::io(dir, e))
        } else {
            Err(DataError::NotFound {
                path: extracted.clone(),
                fix: format!(
                    "the archive {} does not hold a {folder}/ folder: it is not the expected file",
                    archive.display()
                ),
            })
        }
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// MD5 of a file, lower-case hex.
pub fn md5_file(path: &Path) -> Result<String, DataError> {
    let io = |e| DataError::io(path, e);
    let mut file = BufReader::new(File::open(path).map_err(io)?);
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

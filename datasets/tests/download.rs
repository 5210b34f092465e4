//! `--download` against a local HTTP server on 127.0.0.1 serving generated files and a generated
//! CIFAR-10 archive: checksums verified, nothing kept on failure, cached files not fetched again,
//! offline failures that name the address and the folder, and mirrors.
#![cfg(feature = "download")]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cnnc_data::download::{
    Source, download, download_sources, md5_file, mirrored_sources, sources,
};
use cnnc_data::{DataError, DatasetKind, cifar10, fashion_mnist};
use flate2::Compression;
use flate2::write::GzEncoder;

/// Serves `files` by path (`/name`) forever; returns the base address and a request counter.
fn serve(files: HashMap<String, Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match files.get(path.trim_start_matches('/')) {
                Some(body) => ("200 OK", body.as_slice()),
                None => ("404 Not Found", &b"missing"[..]),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body);
        }
    });
    (base, hits)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn md5_of(bytes: &[u8], dir: &Path) -> String {
    let path = dir.join("scratch");
    std::fs::write(&path, bytes).unwrap();
    md5_file(&path).unwrap()
}

fn idx_files() -> Vec<(String, Vec<u8>)> {
    let images = [
        &[0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2][..],
        &[1, 2, 3, 4],
    ]
    .concat();
    let labels = [0u8, 0, 8, 1, 0, 0, 0, 2, 4, 9];
    ["train", "t10k"]
        .iter()
        .flat_map(|split| {
            [
                (format!("{split}-images-idx3-ubyte.gz"), gzip(&images)),
                (format!("{split}-labels-idx1-ubyte.gz"), gzip(&labels)),
            ]
        })
        .collect()
}

#[test]
fn idx_files_are_fetched_verified_and_cached() {
    let scratch = tempfile::tempdir().unwrap();
    let files = idx_files();
    let (base, hits) = serve(files.iter().cloned().collect());
    let list: Vec<Source> = files
        .iter()
        .map(|(name, bytes)| Source {
            url: format!("{base}{name}"),
            file_name: name.clone(),
            md5: md5_of(bytes, scratch.path()),
            extracts_to: None,
        })
        .collect();
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("fashion-mnist");
    download_sources(&list, &dir).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    let splits = fashion_mnist(&dir).unwrap();
    assert_eq!(splits.train.labels(), &[4, 9]);
    // Only the four files, no part files left over.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4);
    // A second run finds every file with its checksum and fetches nothing.
    download_sources(&list, &dir).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // A damaged cached file is fetched again.
    std::fs::write(dir.join(&files[0].0), b"damaged").unwrap();
    download_sources(&list, &dir).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    assert!(fashion_mnist(&dir).is_ok());
}

#[test]
fn a_mirror_serves_the_canonical_files_in_dataset_folders() {
    let files = idx_files();
    let (base, hits) = serve(
        files
            .iter()
            .map(|(name, bytes)| (format!("fashion-mnist/{name}"), bytes.clone()))
            .collect(),
    );
    let canonical = sources(DatasetKind::FashionMnist);
    let mirrored = mirrored_sources(DatasetKind::FashionMnist, &base).unwrap();
    assert_eq!(mirrored.len(), canonical.len());
    for (m, c) in mirrored.iter().zip(&canonical) {
        assert_eq!(m.url, format!("{base}fashion-mnist/{}", c.file_name));
        assert_eq!((&m.file_name, &m.md5), (&c.file_name, &c.md5));
    }
    // These generated files are not the published ones: refused by checksum, nothing kept.
    let cache = tempfile::tempdir().unwrap();
    let err = download(DatasetKind::FashionMnist, cache.path(), Some(&base)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DataError::Checksum { .. }), "{text}");
    assert!(
        text.contains(&mirrored[0].url) && text.contains(&format!("expected {}", canonical[0].md5)),
        "{text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
    // A mirror of these very files is fetched through the same layout and loads.
    let scratch = tempfile::tempdir().unwrap();
    let matching: Vec<Source> = mirrored
        .into_iter()
        .zip(&files)
        .map(|(source, (_, bytes))| Source {
            md5: md5_of(bytes, scratch.path()),
            ..source
        })
        .collect();
    download_sources(&matching, cache.path()).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 5);
    assert_eq!(fashion_mnist(cache.path()).unwrap().train.labels(), &[4, 9]);

    for base in ["https://m.example/data", "https://m.example/data/"] {
        let cifar = mirrored_sources(DatasetKind::Cifar10, base).unwrap();
        assert_eq!(
            cifar[0].url,
            "https://m.example/data/cifar10/cifar-10-binary.tar.gz"
        );
        assert_eq!(
            cifar[0].extracts_to.as_deref(),
            Some("cifar-10-batches-bin")
        );
    }
    for bad in [
        "ftp://m.example",
        "m.example/data",
        "http://",
        "https:///data",
        "",
    ] {
        let err = mirrored_sources(DatasetKind::Mnist, bad).unwrap_err();
        assert!(matches!(err, DataError::Invalid { .. }), "{bad}: {err}");
        assert!(
            err.to_string()
                .contains("not an http:// or https:// address"),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_checksum_keeps_nothing() {
    let files = idx_files();
    let (base, _) = serve(files.iter().cloned().collect());
    let source = Source {
        url: format!("{base}{}", files[0].0),
        file_name: files[0].0.clone(),
        md5: "00000000000000000000000000000000".into(),
        extracts_to: None,
    };
    let cache = tempfile::tempdir().unwrap();
    let err = download_sources(&[source], cache.path()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DataError::Checksum { .. }), "{text}");
    assert!(
        text.contains("expected 00000000000000000000000000000000"),
        "{text}"
    );
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn offline_and_missing_name_the_address_and_the_folder() {
    // A port nobody listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
    let source = Source {
        url: url.clone(),
        file_name: "cifar-10-binary.tar.gz".into(),
        md5: "c32a1d4ab5d03f1284b67883e8d87530".into(),
        extracts_to: Some("cifar-10-batches-bin".into()),
    };
    let err = download_sources(std::slice::from_ref(&source), cache.path()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, DataError::Download { .. }), "{text}");
    assert!(
        text.contains(&url) && text.contains(&cache.path().display().to_string()),
        "{text}"
    );

    let (base, _) = serve(HashMap::new());
    let missing = Source {
        url: format!("{base}nothing.gz"),
        ..source
    };
    let err = download_sources(&[missing], cache.path()).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn a_cifar_archive_is_extracted_into_place() {
    let mut record = vec![3u8];
    record.extend((0..3072u32).map(|i| i as u8));
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for name in names {
        let mut header = tar::Header::new_gnu();
        header.set_size(record.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("cifar-10-batches-bin/{name}"),
            record.as_slice(),
        )
        .unwrap();
    }
    let archive = tar.into_inner().unwrap().finish().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let md5 = md5_of(&archive, scratch.path());
    let (base, hits) = serve([("cifar.tar.gz".to_string(), archive)].into());
    let source = Source {
        url: format!("{base}cifar.tar.gz"),
        file_name: "cifar-10-binary.tar.gz".into(),
        md5,
        extracts_to: Some("cifar-10-batches-bin".into()),
    };
    let cache = tempfile::tempdir().unwrap();
    download_sources(std::slice::from_ref(&source), cache.path()).unwrap();
    let splits = cifar10(cache.path()).unwrap();
    assert_eq!((splits.train.len(), splits.test.len()), (5, 1));
    assert_eq!(splits.test.image(0).unwrap(), &record[1..]);
    // The archive is gone once extracted, and an extracted folder is not fetched again.
    let left: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["cifar-10-batches-bin"]);
    download_sources(&[source], cache.path()).unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[test]
fn canonical_sources_are_complete() {
    assert_eq!(sources(DatasetKind::Cifar10).len(), 1);
    for kind in [DatasetKind::FashionMnist, DatasetKind::Mnist] {
        let list = sources(kind);
        assert_eq!(list.len(), 4);
        assert!(
            list.iter()
                .all(|s| s.url.ends_with(&s.file_name) && s.md5.len() == 32)
        );
    }
    assert!(sources(DatasetKind::Sample).is_empty());
}

//! Weights files whose headers list far more than any model needs (metadata entries by the
//! million, tensors by the hundred thousand, names of megabytes) are refused or reported in
//! bounded time and text, and weights piped through a FIFO load like a file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cnnc_runtime::param::{Entry, Param, Visit};
use cnnc_runtime::weights::{
    LoadProblem, MAX_LISTED_PROBLEMS, MAX_METADATA_BYTES, MAX_METADATA_ENTRIES, MAX_TENSORS,
    TensorData, load, read_tensors, serialize,
};
use ndarray::{ArrayD, IxDyn};

/// Time any of these files may take: parsing the header once, in a debug build, on a busy machine.
const WITHIN: Duration = Duration::from_secs(10);

/// A model with one parameter `w` of shape `[2]`.
struct Tiny(Param);

impl Tiny {
    fn new() -> Tiny {
        Tiny(Param::new(ArrayD::zeros(IxDyn(&[2]))))
    }
}

impl Visit for Tiny {
    fn visit(&mut self, f: &mut dyn FnMut(Entry<'_>)) {
        f(Entry::Param {
            name: "w",
            param: &mut self.0,
        });
    }
}

/// A safetensors file holding `w = [1, 2]` and the header entries `extra` (JSON members, each
/// with its leading comma) after it.
fn with_extra(path: &Path, extra: &str) {
    let header =
        format!("{{\"w\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}{extra}}}");
    let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = [
        &(header.len() as u64).to_le_bytes()[..],
        header.as_bytes(),
        &data,
    ]
    .concat();
    std::fs::write(path, bytes).expect("file written");
}

/// `count` zero-size F32 tensors named `t0`, `t1`, ..., as header members.
fn empty_tensors(count: usize) -> String {
    (0..count)
        .map(|i| format!(",\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}"))
        .collect()
}

/// Loads `path` into a tiny model, timed: the problems and the error's text.
fn refused(path: &Path) -> (Vec<LoadProblem>, String) {
    let start = Instant::now();
    let error = load(&mut Tiny::new(), path).expect_err("refused");
    let text = error.to_string();
    assert!(start.elapsed() < WITHIN, "took {:?}", start.elapsed());
    (error.problems, text)
}

#[test]
fn metadata_past_its_entry_limit_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    // A fortieth of the 8 million entries that once took 4.9 GB: the limit is 1024.
    let entries: Vec<String> = (0..200_000).map(|i| format!("\"k{i}\":\"v\"")).collect();
    with_extra(
        &path,
        &format!(",\"__metadata__\":{{{}}}", entries.join(",")),
    );
    let (problems, text) = refused(&path);
    assert_eq!(
        problems,
        [LoadProblem::Limit(format!(
            "its `__metadata__` holds more than {MAX_METADATA_ENTRIES} entries (the limit; cnnc \
             writes eight, PyTorch one): is this the right file?"
        ))]
    );
    assert!(text.starts_with("cannot load `"), "{text}");
    assert!(
        read_tensors(&path).is_err(),
        "read_tensors shares the limit"
    );
}

#[test]
fn metadata_past_its_size_limit_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    let value = "x".repeat(MAX_METADATA_BYTES);
    with_extra(
        &path,
        &format!(",\"__metadata__\":{{\"format\":\"pt\",\"big\":\"{value}\"}}"),
    );
    let (problems, _) = refused(&path);
    assert!(
        matches!(&problems[..], [LoadProblem::Limit(why)] if why.contains("bytes of keys and values")),
        "{problems:?}"
    );
}

#[test]
fn headers_listing_more_tensors_than_the_limit_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    with_extra(&path, &empty_tensors(MAX_TENSORS));
    let (problems, text) = refused(&path);
    assert!(
        matches!(&problems[..], [LoadProblem::Limit(why)] if why.contains(&format!("more than {MAX_TENSORS} tensors"))),
        "{problems:?}"
    );
    assert!(text.len() < 400, "{text}");
}

#[test]
fn unexpected_tensors_by_the_thousand_are_counted_not_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    // Within the tensor limit: 50,000 problems, of which the message lists 20.
    with_extra(&path, &empty_tensors(50_000));
    let (problems, text) = refused(&path);
    assert_eq!(problems.len(), 50_000);
    assert_eq!(text.lines().count(), 1 + MAX_LISTED_PROBLEMS + 1, "{text}");
    assert!(text.ends_with("\n  - and 49980 more"), "{text}");
    assert!(text.len() < 4000, "{} bytes", text.len());
}

#[test]
fn a_name_of_megabytes_is_quoted_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("w.safetensors");
    let name = "n".repeat(4 << 20);
    with_extra(
        &path,
        &format!(",\"{name}\":{{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}"),
    );
    let (_, text) = refused(&path);
    assert!(text.len() < 400, "{} bytes", text.len());
    assert!(text.contains(&format!("... ({} bytes)", 4 << 20)), "{text}");
}

#[cfg(unix)]
mod fifo {
    use std::io::Write;
    use std::process::Command;

    use super::*;

    /// A FIFO at `dir/name`, fed `bytes` by a thread once a reader opens it.
    fn fifo_with(dir: &Path, name: &str, bytes: Vec<u8>) -> std::path::PathBuf {
        let path = dir.join(name);
        let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(made.success(), "mkfifo failed");
        let writer = path.clone();
        std::thread::spawn(move || {
            // The reader may stop early (a refused header): a broken pipe is no failure here.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(writer)
                .and_then(|mut f| f.write_all(&bytes));
        });
        path
    }

    fn tiny_file() -> Vec<u8> {
        let w = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f32, 2.0]).expect("2 values");
        let metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned())]);
        serialize(&[("w".into(), TensorData::F32(w))], &metadata)
    }

    #[test]
    fn weights_piped_through_a_fifo_load() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = fifo_with(dir.path(), "w.safetensors", tiny_file());
        let mut model = Tiny::new();
        let metadata = load(&mut model, &path).expect("loaded from the FIFO");
        assert_eq!(model.0.value.as_slice(), Some(&[1.0, 2.0][..]));
        assert_eq!(metadata.get("format").map(String::as_str), Some("pt"));

        let path = fifo_with(dir.path(), "t.safetensors", tiny_file());
        let file = read_tensors(&path).expect("read from the FIFO");
        assert_eq!(file.tensors.len(), 1);
    }

    #[test]
    fn a_cut_stream_is_called_truncated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bytes = tiny_file();
        bytes.truncate(bytes.len() - 3);
        let path = fifo_with(dir.path(), "w.safetensors", bytes);
        let error = load(&mut Tiny::new(), &path).expect_err("cut short");
        assert_eq!(
            error.problems,
            [LoadProblem::Corrupt(
                "the header describes 8 bytes of tensor data but 5 bytes follow it \
                 (truncated file?)"
                    .into()
            )]
        );
        let mut bytes = tiny_file();
        bytes.truncate(20);
        let path = fifo_with(dir.path(), "h.safetensors", bytes);
        let error = load(&mut Tiny::new(), &path).expect_err("cut in the header");
        let text = error.to_string();
        assert!(
            text.contains("but only 12 bytes follow (truncated file?)"),
            "{text}"
        );
    }
}

//! Helpers shared by the end-to-end tests of `cnnc run/train/eval/predict`: running the binary,
//! tiny specs, and small datasets written in each exact on-disk format (IDX, CIFAR-10 binary,
//! image folders) with a pattern a small network learns in a few epochs.

#![allow(dead_code)]

pub mod xml;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `cnnc` with `args` from the repository root.
pub fn cnnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cnnc runs")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit status, showing both streams when it differs.
pub fn assert_status(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A path as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("file written");
    path
}

/// A tiny 10-class network over `[channels, side, side]` inputs.
pub fn tiny_spec(dir: &Path, name: &str, channels: usize, side: usize) -> PathBuf {
    write(
        dir,
        name,
        &format!(
            "input ({channels}, {side}, {side})\nconv2d(out_channels=4, kernel_size=3, padding=1)\n\
             relu\nmaxpool2d(kernel_size=2)\nflatten\nlinear(out_features=10)\n"
        ),
    )
}

/// A small deterministic generator (64-bit LCG), so datasets are the same on every run.
pub struct Lcg(u64);

impl Lcg {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Lcg(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }
}

/// One `[channels, side, side]` image of class `label` (of 10): dim noise plus a bright 2x2 block
/// whose place tells the class.
pub fn pattern(label: usize, channels: usize, side: usize, rng: &mut Lcg) -> Vec<u8> {
    let mut pixels: Vec<u8> = (0..channels * side * side)
        .map(|_| rng.byte() / 6)
        .collect();
    let slots = (side / 2).pow(2).max(1);
    let slot = label * slots / 10;
    let (row, col) = (slot / (side / 2) * 2, slot % (side / 2) * 2);
    for c in 0..channels {
        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let (y, x) = ((row + dy).min(side - 1), (col + dx).min(side - 1));
            pixels[c * side * side + y * side + x] = 200 + rng.byte() / 5;
        }
    }
    pixels
}

/// `count` labels cycling through the 10 classes, with the images that go with them.
pub fn samples(count: usize, channels: usize, side: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut rng = Lcg::new(seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..count {
        let label = (i * 7 + i / 10) % 10;
        labels.push(label as u8);
        images.extend(pattern(label, channels, side, &mut rng));
    }
    (images, labels)
}

/// Writes an MNIST-layout dataset (raw IDX files) of `side`x`side` grey images into `dir`.
pub fn write_idx(dir: &Path, train: usize, test: usize, side: usize) {
    std::fs::create_dir_all(dir).expect("data dir");
    for (prefix, count, seed) in [("train", train, 1), ("t10k", test, 2)] {
        let (images, labels) = samples(count, 1, side, seed);
        let mut bytes = 0x0000_0803u32.to_be_bytes().to_vec();
        for dim in [count, side, side] {
            bytes.extend((dim as u32).to_be_bytes());
        }
        bytes.extend(images);
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), bytes).expect("idx");
        let mut bytes = 0x0000_0801u32.to_be_bytes().to_vec();
        bytes.extend((count as u32).to_be_bytes());
        bytes.extend(labels);
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), bytes).expect("idx");
    }
}

/// Writes CIFAR-10 binary batches (`per_file` records in each of the six files) into `dir`.
pub fn write_cifar(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).expect("data dir");
    let files = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (seed, file) in files.iter().enumerate() {
        let (images, labels) = samples(per_file, 3, 32, seed as u64 + 10);
        let mut bytes = Vec::new();
        for (label, image) in labels.iter().zip(images.chunks(3 * 32 * 32)) {
            bytes.push(*label);
            bytes.extend_from_slice(image);
        }
        std::fs::write(dir.join(file), bytes).expect("cifar batch");
    }
}

/// Writes `root/train/<class>/*.png` and `root/test/<class>/*.png`: 8x8 RGB images, dark
/// `night` and bright `day` (the class names are taken from the folder names).
pub fn write_folder(root: &Path, per_class: usize) {
    let mut rng = Lcg::new(7);
    for split in ["train", "test"] {
        for (class, base) in [("day", 170u8), ("night", 20u8)] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).expect("class dir");
            for i in 0..per_class {
                let image = image::RgbImage::from_fn(8, 8, |_, _| {
                    image::Rgb([base + rng.byte() / 4, base + rng.byte() / 4, base])
                });
                image
                    .save(dir.join(format!("{i}.png")))
                    .expect("png written");
            }
        }
    }
}

/// Flags that learn the generated patterns in a few epochs.
pub const FAST: [&str; 4] = ["--batch-size", "16", "--lr", "0.05"];

/// Trains `spec` on the MNIST-layout data in `data` into `out` with `flags`.
pub fn train(spec: &Path, data: &Path, out: &Path, flags: &[&str]) -> Output {
    cnnc(&train_args(spec, data, out, flags))
}

/// The arguments of [`train`].
pub fn train_args<'a>(
    spec: &'a Path,
    data: &'a Path,
    out: &'a Path,
    flags: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        arg(spec),
        "--dataset",
        "mnist",
        "--data",
        arg(data),
        "--out",
        arg(out),
    ];
    args.extend_from_slice(flags);
    args
}

/// The bytes of `dir/name`.
pub fn bytes(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `checkpoint.json` of a run, parsed.
pub fn run_state(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&bytes(dir, "checkpoint.json")).expect("checkpoint.json is JSON")
}

/// Serves `files` by path (`dir/name`, no leading slash) over HTTP on 127.0.0.1 until the test
/// ends; returns the base address (`http://127.0.0.1:PORT`) and every path requested, in order.
pub fn serve(
    files: Vec<(String, Vec<u8>)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a local port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let found = files
                .iter()
                .find(|(name, _)| name == path.trim_start_matches('/'));
            if let Ok(mut log) = log.lock() {
                log.push(path);
            }
            let (status, body) = match found {
                Some((_, body)) => ("200 OK", body.as_slice()),
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
    (base, requests)
}

/// The gzip compression of `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

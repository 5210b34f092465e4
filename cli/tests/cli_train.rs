//! End-to-end tests of `cnnc train` on tiny generated datasets: the checkpoint contract (`--out`
//! receives `*.safetensors`), metrics and chart, bridging notice, bit-identical `--resume` (after
//! a finished epoch and after Ctrl-C), refusals, and that a checkpoint is never replaced by a bad
//! one.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use support::*;

/// A 3x12x12 network trained on 1x8x8 IDX images (so they are bridged) in `dir/data`.
fn setup(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    write_idx(&data, 120, 40, 8);
    (tiny_spec(dir, "tiny.cnn", 3, 12), data)
}

#[test]
fn trains_writes_checkpoint_metrics_and_chart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let out = dir.path().join("run");
    let output = train(
        &spec,
        &data,
        &out,
        &[&FAST[..], &["--epochs", "3"]].concat(),
    );
    assert_status(&output, 0);
    let (text, notes) = (stdout(&output), stderr(&output));
    assert!(text.contains("epoch 3/3"), "{text}");
    let notice = "notice: dataset images are 1x8x8, model input is 3x12x12: padding 2 zero pixels \
                  on every side and repeating the grey channel 3 times";
    assert_eq!(notes.matches(notice).count(), 1, "{notes}");

    let safetensors: Vec<_> = std::fs::read_dir(&out)
        .expect("out dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    assert_eq!(safetensors, vec![out.join("model.safetensors")]);
    let weights = cnnc::runtime::weights::read_tensors(&safetensors[0]).expect("weights load");
    assert_eq!(weights.tensors.len(), 4, "conv and linear weight and bias");
    assert_eq!(weights.metadata["cnnc.dataset"], "mnist");
    assert_eq!(weights.metadata["cnnc.step"], "24");

    let csv = String::from_utf8(bytes(&out, "metrics.csv")).expect("UTF-8");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,step,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds"
    );
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[3].starts_with("3,24,0.05,"), "{csv}");
    let chart = image::load_from_memory(&bytes(&out, "metrics.png")).expect("a PNG chart");
    assert_eq!((chart.width(), chart.height()), (960, 400));

    let state = run_state(&out);
    assert_eq!(state["epochs_done"], 3);
    let accuracy = state["history"][2]["val_accuracy"]
        .as_f64()
        .expect("a number");
    assert!(accuracy > 0.5, "the pattern is easy to learn: {accuracy}");
}

#[test]
fn resume_after_an_epoch_is_bit_identical() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    // Dropout masks continue from where their random streams stood, not from their start.
    let dropout = write(
        dir.path(),
        "dropout.cnn",
        "input (3, 12, 12)\nconv2d(out_channels=4, kernel_size=3, padding=1)\nrelu\n\
         maxpool2d(kernel_size=2)\nflatten\ndropout(p=0.3)\nlinear(out_features=10)\n",
    );
    for (name, spec) in [("plain", &spec), ("dropout", &dropout)] {
        let (straight, split) = (
            dir.path().join(format!("{name}-straight")),
            dir.path().join(format!("{name}-split")),
        );
        // A batch size that leaves a short last batch, augmentation and Adam state all carry over.
        let flags = [
            "--batch-size",
            "7",
            "--augment",
            "--optimizer",
            "adam",
            "--lr",
            "0.01",
        ];
        let with = |epochs: &'static str| [&flags[..], &["--epochs", epochs]].concat();
        assert_status(&train(spec, &data, &straight, &with("2")), 0);
        assert_status(&train(spec, &data, &split, &with("1")), 0);
        let resumed = cnnc(&["train", arg(spec), "--resume", arg(&split), "--epochs", "2"]);
        assert_status(&resumed, 0);
        assert!(stdout(&resumed).contains("epoch 2/2"));
        assert_eq!(
            stderr(&resumed).matches("notice:").count(),
            1,
            "only the bridging notice"
        );
        for file in ["model.safetensors", "optimizer.state"] {
            assert!(
                bytes(&straight, file) == bytes(&split, file),
                "{name}: {file} differs"
            );
        }
        let history = |dir: &Path| run_state(dir)["history"].as_array().expect("history").len();
        assert_eq!((history(&straight), history(&split)), (2, 2));
        let streams = |dir: &Path| run_state(dir)["rng_states"].clone();
        assert_eq!(streams(&straight), streams(&split), "{name}");
        let expected = match name {
            // Layer 4 (unnamed layers go by index) drew one 32-bit word per value: 2 epochs
            // of 120 images of 4*6*6 values.
            "dropout" => serde_json::json!({ "4": (2 * 120 * 4 * 6 * 6).to_string() }),
            _ => serde_json::json!({}),
        };
        assert_eq!(streams(&split), expected, "{name}");
    }
}

/// A checkpoint keyed the way cnnc keyed them before the canonical model form (SHA-256 of the
/// layer descriptions' `Debug` text) still resumes. `LEGACY` is the `spec_hash` that cnnc at
/// commit 9f60ee0 wrote into `checkpoint.json` for `tiny_spec(3, 12)`.
#[test]
fn a_checkpoint_keyed_before_the_canonical_form_still_resumes() {
    const LEGACY: &str = "88ede88edbcc1a0a9ad474916fda97efb0c2c10b5003d36da78eac42ea62fb78";
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let out = dir.path().join("run");
    let flags = [&FAST[..], &["--epochs", "1"]].concat();
    assert_status(&train(&spec, &data, &out, &flags), 0);
    let mut state = run_state(&out);
    assert_ne!(
        state["spec_hash"], LEGACY,
        "new checkpoints use the canonical form"
    );
    state["spec_hash"] = serde_json::json!(LEGACY);
    let json = serde_json::to_vec_pretty(&state).expect("JSON");
    std::fs::write(out.join("checkpoint.json"), json).expect("checkpoint.json");
    let resumed = cnnc(&["train", arg(&spec), "--resume", arg(&out), "--epochs", "2"]);
    assert_status(&resumed, 0);
    assert!(
        stdout(&resumed).contains("epoch 2/2"),
        "{}",
        stderr(&resumed)
    );
    // A checkpoint of another spec is still refused, whichever way it is keyed.
    state["spec_hash"] = serde_json::json!("0".repeat(64));
    let json = serde_json::to_vec_pretty(&state).expect("JSON");
    std::fs::write(out.join("checkpoint.json"), json).expect("checkpoint.json");
    let refused = cnnc(&["train", arg(&spec), "--resume", arg(&out), "--epochs", "3"]);
    assert_status(&refused, 1);
}

#[test]
fn ctrl_c_leaves_a_checkpoint_that_resumes_bit_identically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let (straight, stopped) = (dir.path().join("straight"), dir.path().join("stopped"));
    let flags = ["--epochs", "4", "--batch-size", "3", "--augment"];
    assert_status(&train(&spec, &data, &straight, &flags), 0);

    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args([
            "train",
            arg(&spec),
            "--dataset",
            "mnist",
            "--data",
            arg(&data),
        ])
        .args(["--out", arg(&stopped)])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cnnc starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    // The first line is printed once the Ctrl-C handler is in place.
    let first = lines.next().expect("a first line").expect("UTF-8");
    assert!(first.starts_with("training "), "{first}");
    let kill = Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("cnnc finishes");
    assert_eq!(status.code(), Some(130), "{rest:?}");
    assert!(
        rest.last().is_some_and(|l| l.contains("--resume")),
        "{rest:?}"
    );

    let resumed = cnnc(&["train", arg(&spec), "--resume", arg(&stopped)]);
    assert_status(&resumed, 0);
    for file in ["model.safetensors", "optimizer.state"] {
        assert!(
            bytes(&straight, file) == bytes(&stopped, file),
            "{file} differs"
        );
    }
}

#[test]
fn resume_refuses_another_spec_recipe_or_data_and_keeps_the_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let out = dir.path().join("run");
    let one = [&FAST[..], &["--epochs", "1"]].concat();
    assert_status(&train(&spec, &data, &out, &one), 0);
    let before = bytes(&out, "model.safetensors");

    let other = write(
        dir.path(),
        "other.cnn",
        "input (3, 12, 12)\nconv2d(out_channels=4, kernel_size=3, padding=1)\nrelu\n\
         avgpool2d(kernel_size=2)\nflatten\nlinear(out_features=10)\n",
    );
    let refused = cnnc(&["train", arg(&other), "--resume", arg(&out), "--epochs", "2"]);
    assert_status(&refused, 1);
    assert!(
        stderr(&refused).contains("cannot resume"),
        "{}",
        stderr(&refused)
    );

    let refused = cnnc(&[
        "train",
        arg(&spec),
        "--resume",
        arg(&out),
        "--epochs",
        "2",
        "--lr",
        "0.1",
        "--seed",
        "9",
    ]);
    assert_status(&refused, 1);
    let message = stderr(&refused);
    assert!(
        message.contains("--lr 0.05 (this command: 0.1)")
            && message.contains("--seed 0 (this command: 9)"),
        "{message}"
    );

    let fewer = dir.path().join("fewer");
    write_idx(&fewer, 100, 40, 8);
    let refused = cnnc(&[
        "train",
        arg(&spec),
        "--resume",
        arg(&out),
        "--epochs",
        "2",
        "--data",
        arg(&fewer),
    ]);
    assert_status(&refused, 1);
    assert!(stderr(&refused).contains("120 training images (now 100)"));

    let again = train(&spec, &data, &out, &one);
    assert_status(&again, 2);
    assert!(stderr(&again).contains("already holds a checkpoint"));
    assert!(
        bytes(&out, "model.safetensors") == before,
        "checkpoint replaced"
    );
}

#[test]
fn divergence_is_refused_without_writing_weights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let out = dir.path().join("run");
    let output = train(&spec, &data, &out, &["--epochs", "1", "--lr", "1e30"]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("training diverged"),
        "{}",
        stderr(&output)
    );
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn data_that_does_not_fit_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, data) = setup(dir.path());
    let small = tiny_spec(dir.path(), "small.cnn", 1, 6);
    let out = dir.path().join("run");
    let output = train(&small, &data, &out, &["--epochs", "1"]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("dataset images are 1x8x8, model input is 1x6x6"),
        "{}",
        stderr(&output)
    );

    let two_classes = write(
        dir.path(),
        "two.cnn",
        "input (1, 8, 8)\nflatten\nlinear(out_features=2)\n",
    );
    let output = train(&two_classes, &data, &out, &["--epochs", "1"]);
    assert_status(&output, 1);
    assert!(stderr(&output).contains("has 10 classes but the model has 2 outputs"));

    let truncated = dir.path().join("truncated");
    write_idx(&truncated, 20, 10, 8);
    let labels = truncated.join("t10k-labels-idx1-ubyte");
    let full = std::fs::read(&labels).expect("labels");
    std::fs::write(&labels, &full[..full.len() - 3]).expect("truncated");
    let output = train(&small, &truncated, &out, &["--epochs", "1"]);
    assert_status(&output, 1);
    assert!(
        stderr(&output).contains("t10k-labels-idx1-ubyte"),
        "{}",
        stderr(&output)
    );

    let missing = train(
        &small,
        &dir.path().join("nowhere"),
        &out,
        &["--epochs", "1"],
    );
    assert_status(&missing, 2);
    assert!(
        stderr(&missing).contains("--download"),
        "{}",
        stderr(&missing)
    );
    assert!(!out.exists());
}

#[test]
fn cifar_and_image_folder_datasets_train() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cifar = dir.path().join("cifar");
    write_cifar(&cifar.join("cifar-10-batches-bin"), 6);
    let spec = write(
        dir.path(),
        "cifar.cnn",
        "input (3, 32, 32)\navgpool2d(kernel_size=4)\nflatten\nlinear(out_features=10)\n",
    );
    let out = dir.path().join("cifar-run");
    let output = cnnc(&[
        "train",
        arg(&spec),
        "--dataset",
        "cifar10",
        "--data",
        arg(&cifar),
        "--out",
        arg(&out),
        "--epochs",
        "1",
        "--batch-size",
        "8",
    ]);
    assert_status(&output, 0);
    assert!(stdout(&output).contains("30 training, 6 validation images"));

    let folder = dir.path().join("folder");
    write_folder(&folder, 6);
    let spec = tiny_spec(dir.path(), "rgb.cnn", 3, 8);
    let out = dir.path().join("folder-run");
    let output = cnnc(&[
        "train",
        arg(&spec),
        "--dataset",
        "folder",
        "--data",
        arg(&folder),
        "--out",
        arg(&out),
        "--epochs",
        "1",
        "--batch-size",
        "4",
    ]);
    assert_status(&output, 0);
    assert!(stderr(&output).contains("2 classes, the model has 10 outputs"));
    let weights =
        cnnc::runtime::weights::read_tensors(&out.join("model.safetensors")).expect("weights");
    assert_eq!(weights.metadata["cnnc.classes"], r#"["day","night"]"#);
}

#[test]
fn download_fetches_from_the_mirror_and_refuses_files_unlike_the_published_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 28);
    let raw = dir.path().join("raw");
    write_idx(&raw, 20, 10, 28);
    let served: Vec<(String, Vec<u8>)> = ["train", "t10k"]
        .iter()
        .flat_map(|split| {
            [
                format!("{split}-images-idx3-ubyte"),
                format!("{split}-labels-idx1-ubyte"),
            ]
        })
        .map(|name| {
            let bytes = gzip(&bytes(&raw, &name));
            (format!("fashion-mnist/{name}.gz"), bytes)
        })
        .collect();
    let served_md5 = {
        let path = dir.path().join("served.gz");
        std::fs::write(&path, &served[0].1).expect("file written");
        cnnc::runtime::data::download::md5_file(&path).expect("md5")
    };
    let (base, requests) = serve(served);
    let cache = dir.path().join("cache");
    let download = |mirror_flag: Option<&str>, env: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cnnc"));
        command.args([
            "train",
            arg(&spec),
            "--dataset",
            "fashion-mnist",
            "--data",
            arg(&cache),
        ]);
        command.args(["--download", "--out", arg(&dir.path().join("run"))]);
        if let Some(url) = mirror_flag {
            command.args(["--mirror", url]);
        }
        match env {
            Some(url) => command.env("CNNC_DOWNLOAD_MIRROR", url),
            None => command.env_remove("CNNC_DOWNLOAD_MIRROR"),
        };
        command.output().expect("cnnc runs")
    };
    let first = "/fashion-mnist/train-images-idx3-ubyte.gz";
    let requested = || requests.lock().expect("request log").clone();

    // The flag, with a trailing slash: the mirror is asked for the canonical file name in the
    // dataset's folder, and what it serves is checked against the published checksum.
    let refused = download(Some(&format!("{base}/")), None);
    assert_status(&refused, 2);
    let text = stderr(&refused);
    assert!(
        text.contains(&format!("{base}{first}: downloaded data has md5 {served_md5}, expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cannot download fashion-mnist from the mirror {base}/"
        )),
        "{text}"
    );
    assert_eq!(requested(), [first]);
    let kept = std::fs::read_dir(&cache).map_or(0, |entries| entries.count());
    assert_eq!(kept, 0, "nothing is kept from a refused download");
    assert!(!dir.path().join("run").exists());

    // The environment variable sets it for every command; the flag wins over it.
    assert_status(&download(None, Some(&base)), 2);
    assert_eq!(requested(), [first, first]);
    assert_status(&download(Some(&base), Some("http://127.0.0.1:1")), 2);
    assert_eq!(requested(), [first, first, first]);

    let bad = download(Some("mirror.example/datasets"), None);
    assert_status(&bad, 2);
    assert!(
        stderr(&bad).contains("is not an http:// or https:// address"),
        "{}",
        stderr(&bad)
    );
    let without_download = cnnc(&[
        "train",
        arg(&spec),
        "--dataset",
        "fashion-mnist",
        "--mirror",
        &base,
    ]);
    assert_status(&without_download, 2);
    assert_eq!(requested().len(), 3);

    let help = stdout(&cnnc(&["train", "--help"]));
    assert!(
        help.contains("--mirror <URL>") && help.contains("CNNC_DOWNLOAD_MIRROR"),
        "{help}"
    );
}

#[test]
fn resume_refuses_dropout_stream_positions_that_do_not_fit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, data) = setup(dir.path());
    let spec = write(
        dir.path(),
        "dropout.cnn",
        "input (3, 12, 12)\nflatten\ndropout(p=0.5)\nlinear(out_features=10)\n",
    );
    let out = dir.path().join("run");
    assert_status(
        &train(
            &spec,
            &data,
            &out,
            &[&FAST[..], &["--epochs", "1"]].concat(),
        ),
        0,
    );
    let state = run_state(&out);
    assert_eq!(
        state["rng_states"],
        serde_json::json!({ "1": (120 * 3 * 12 * 12).to_string() })
    );
    let before = bytes(&out, "model.safetensors");
    for (streams, complaint) in [
        (
            serde_json::json!({}),
            "no random-stream position given for layer `1`",
        ),
        (
            serde_json::json!({ "1": "-3" }),
            "layer `1` is `-3`, not a non-negative integer",
        ),
        (
            serde_json::json!({ "1": "5", "ghost": "5" }),
            "positions given for unknown layers (not dropout layers of this network): `ghost`",
        ),
    ] {
        let mut tampered = state.clone();
        tampered["rng_states"] = streams;
        std::fs::write(
            out.join("checkpoint.json"),
            serde_json::to_vec(&tampered).expect("JSON"),
        )
        .expect("state written");
        let refused = cnnc(&["train", arg(&spec), "--resume", arg(&out), "--epochs", "2"]);
        assert_status(&refused, 1);
        assert!(stderr(&refused).contains(complaint), "{}", stderr(&refused));
        assert!(
            bytes(&out, "model.safetensors") == before,
            "the checkpoint is kept"
        );
    }
}

/// Holds `dir`'s training lock as another `cnnc train` would.
fn hold_lock(dir: &Path) -> std::fs::File {
    std::fs::create_dir_all(dir).expect("folder");
    let lock = std::fs::File::create(dir.join(".cnnc-train.lock")).expect("lock file");
    lock.try_lock().expect("the lock is free");
    lock
}

#[test]
fn a_folder_another_run_holds_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let out = dir.path().join("run");
    let held = hold_lock(&out);
    let refused = train(
        &spec,
        &data,
        &out,
        &[&FAST[..], &["--epochs", "1"]].concat(),
    );
    assert_status(&refused, 2);
    let message = stderr(&refused);
    assert!(
        message.contains(&format!(
            "{} is in use by another `cnnc train` (it holds {}); wait for that run to end, or \
             choose another --out",
            out.display(),
            out.join(".cnnc-train.lock").display()
        )),
        "{message}"
    );
    let names: Vec<_> = std::fs::read_dir(&out)
        .expect("out dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec![".cnnc-train.lock"], "nothing written");
    drop(held);
    let output = train(
        &spec,
        &data,
        &out,
        &[&FAST[..], &["--epochs", "1"]].concat(),
    );
    assert_status(&output, 0);

    // Resuming a folder that is in use is refused too, before reading (and recovering) it.
    let before = bytes(&out, "checkpoint.json");
    let _held = hold_lock(&out);
    let resumed = cnnc(&["train", arg(&spec), "--resume", arg(&out), "--epochs", "2"]);
    assert_status(&resumed, 2);
    assert!(stderr(&resumed).contains("is in use by another `cnnc train`"));
    assert_eq!(bytes(&out, "checkpoint.json"), before);
}

#[test]
fn sigterm_leaves_a_checkpoint_that_resumes_bit_identically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let (straight, stopped) = (dir.path().join("straight"), dir.path().join("stopped"));
    let flags = ["--epochs", "4", "--batch-size", "3", "--augment"];
    assert_status(&train(&spec, &data, &straight, &flags), 0);

    // What `timeout`, `docker stop` and cluster schedulers send.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args([
            "train",
            arg(&spec),
            "--dataset",
            "mnist",
            "--data",
            arg(&data),
        ])
        .args(["--out", arg(&stopped)])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cnnc starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    // The first line is printed once the signal handlers are in place.
    let first = lines.next().expect("a first line").expect("UTF-8");
    assert!(first.starts_with("training "), "{first}");
    let kill = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("cnnc finishes");
    assert_eq!(status.code(), Some(143), "{rest:?}");
    let last = rest.last().map_or("", String::as_str);
    assert!(
        last.starts_with("interrupted by SIGTERM ") && last.contains("--resume"),
        "{rest:?}"
    );

    let resumed = cnnc(&["train", arg(&spec), "--resume", arg(&stopped)]);
    assert_status(&resumed, 0);
    for file in ["model.safetensors", "optimizer.state"] {
        assert!(
            bytes(&straight, file) == bytes(&stopped, file),
            "{file} differs"
        );
    }
}

#[test]
fn the_chart_is_written_as_png_and_svg() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path());
    let out = dir.path().join("run");
    let flags = [&FAST[..], &["--epochs", "3"]].concat();
    assert_status(&train(&spec, &data, &out, &flags), 0);
    let chart = image::load_from_memory(&bytes(&out, "metrics.png")).expect("a PNG chart");
    assert_eq!((chart.width(), chart.height()), (960, 400));
    let svg = String::from_utf8(bytes(&out, "metrics.svg")).expect("UTF-8");
    assert!(
        svg.starts_with("<svg width=\"960\" height=\"400\""),
        "{svg}"
    );
    // Each panel draws a training (blue) and a validation (orange) curve through 3 epochs.
    for color in ["#1F77B4", "#FF7F0E"] {
        let curves: Vec<usize> = svg
            .lines()
            .filter(|l| l.starts_with("<polyline") && l.contains(&format!("stroke=\"{color}\"")))
            .filter_map(|l| {
                let points = l.split("points=\"").nth(1)?.split('"').next()?;
                Some(points.split_whitespace().count())
            })
            .filter(|&points| points == 3)
            .collect();
        assert_eq!(curves.len(), 2, "{color}: {svg}");
    }
}

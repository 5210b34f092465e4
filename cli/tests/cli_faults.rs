//! Nothing lost on a crash, a full disk or a diverging run: `cnnc train` killed with SIGKILL at
//! random moments and at every step of a checkpoint save always leaves a loadable checkpoint that
//! resumes bit-identically; a write that fails (a file-size limit standing in for a full disk)
//! names the file and leaves the previous checkpoint and outputs byte for byte; a run whose loss
//! goes NaN stops naming the step and the layer, keeping the last checkpoint.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The checkpoint's files, in the order a save commits them.
const CHECKPOINT: [&str; 3] = ["model.safetensors", "optimizer.state", "checkpoint.json"];

/// A 1x8x8 network and `train` MNIST-layout training images in `dir/data`.
fn setup(dir: &Path, train: usize) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    write_idx(&data, train, 40, 8);
    (tiny_spec(dir, "tiny.cnn", 1, 8), data)
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("a folder")
        .map(|e| {
            let e = e.expect("an entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("a readable file"))
        })
        .collect()
}

/// The hidden files in `dir` but the run's lock: pending checkpoint files and temporary files of
/// unfinished writes.
fn hidden(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.') && name != LOCK_FILE)
        .collect()
}

/// The lock a training run holds in its folder: an empty file that stays, not a leftover.
const LOCK_FILE: &str = ".cnnc-train.lock";

/// `cnnc` with `args`, its output captured.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cnnc"));
    command
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// `cnnc eval` of the weights in `out` (their metadata names the data) succeeds.
fn assert_loadable(spec: &Path, out: &Path, when: &str) {
    let weights = out.join("model.safetensors");
    let output = cnnc(&["eval", arg(spec), "--weights", arg(&weights)]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{when}: the checkpoint does not load: {}",
        stderr(&output)
    );
}

/// Runs `cnnc args` under a file-size limit of `limit` shell blocks, with SIGXFSZ ignored so
/// that a write past the limit fails with EFBIG, as on a full disk.
fn limited(limit: u64, args: &[&str]) -> Output {
    Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f \"$0\" && exec \"$@\""])
        .arg(limit.to_string())
        .arg(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("sh runs")
}

/// The unit of `ulimit -f` in bytes (512 for dash and POSIX shells, 1024 for bash).
fn limit_unit(dir: &Path) -> u64 {
    let probe = dir.join("probe");
    let status = Command::new("sh")
        .args([
            "-c",
            // `head` reports the failed write it is meant to hit: keep that out of the output.
            "trap '' XFSZ; ulimit -f 1 && head -c 4096 /dev/zero > \"$0\" 2>/dev/null; true",
        ])
        .arg(&probe)
        .status()
        .expect("sh runs");
    assert!(status.success());
    let unit = std::fs::metadata(&probe).expect("the probe file").len();
    std::fs::remove_file(&probe).expect("probe removed");
    assert!(unit == 512 || unit == 1024, "ulimit -f unit {unit}");
    unit
}

#[test]
fn sigkill_at_random_moments_never_loses_the_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path(), 200);
    // 50 steps and a checkpoint per epoch; enough epochs that the kills end before the run.
    let epochs = 30;
    let flags = ["--epochs", "30", "--batch-size", "4", "--lr", "0.05"];
    let straight = dir.path().join("straight");
    let started = Instant::now();
    assert_status(&train(&spec, &data, &straight, &flags), 0);
    let epoch_time = started.elapsed() / epochs;

    let out = dir.path().join("killed");
    let mut rng = Lcg::new(2024);
    let (mut kills, mut during_save) = (0, Vec::new());
    for round in 0..14 {
        let resumable =
            out.join("checkpoint.json").exists() || out.join(".checkpoint.json.pending").exists();
        let args = if resumable {
            vec!["train", arg(&spec), "--resume", arg(&out)]
        } else {
            train_args(&spec, &data, &out, &flags)
        };
        let mut child = command(&args).spawn().expect("cnnc starts");
        if round % 2 == 0 {
            // Any moment of the run's first three epochs: loading, training, validating or
            // saving.
            let fraction = f64::from(rng.byte()) / 256.0;
            std::thread::sleep((epoch_time * 3).mul_f64(fraction));
        } else {
            // In a save: once its first file appears, plus up to a millisecond.
            let deadline = Instant::now() + epoch_time * 10;
            while hidden(&out).is_empty()
                && Instant::now() < deadline
                && child.try_wait().ok().flatten().is_none()
            {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_micros(u64::from(rng.byte()) * 4));
        }
        // SIGKILL, which nothing can catch.
        child.kill().expect("kill");
        let output = child.wait_with_output().expect("cnnc ends");
        match output.status.code() {
            None => kills += 1,
            Some(0) => break,
            Some(_) => panic!("round {round} failed: {}", stderr(&output)),
        }
        let left = hidden(&out);
        if !left.is_empty() {
            during_save.push(left);
        }
        if out.join("model.safetensors").exists() {
            assert_loadable(&spec, &out, &format!("after kill {kills}"));
        }
    }
    eprintln!(
        "{kills} kills, {} in a save: {during_save:?}",
        during_save.len()
    );
    assert!(kills >= 8, "only {kills} runs were killed");
    assert!(
        !during_save.is_empty(),
        "no kill landed in a save: {kills} kills"
    );

    let resumed = cnnc(&["train", arg(&spec), "--resume", arg(&out)]);
    assert_status(&resumed, 0);
    assert_eq!(hidden(&out), Vec::<String>::new());
    for file in ["model.safetensors", "optimizer.state"] {
        assert!(
            bytes(&straight, file) == bytes(&out, file),
            "{file} differs from the uninterrupted run's after {kills} kills, {} in a save: \
             {during_save:?}",
            during_save.len()
        );
    }
}

#[test]
fn a_kill_at_each_step_of_a_save_resumes_from_one_whole_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path(), 120);
    let flags = ["--batch-size", "8", "--lr", "0.05"];
    let run = |name: &str, epochs: &'static str| {
        let out = dir.path().join(name);
        let flags = [&flags[..], &["--epochs", epochs]].concat();
        assert_status(&train(&spec, &data, &out, &flags), 0);
        out
    };
    let (first, second, straight) = (run("first", "1"), run("second", "2"), run("straight", "3"));

    // Where a kill leaves the folder while the save of epoch 2 replaces the one of epoch 1: the
    // files of that save are written whole as `.NAME.pending`, then renamed in order.
    let pending = |name: &str| format!(".{name}.pending");
    let cases: [(&str, &[&str], &[&str], bool); 7] = [
        ("before the save", &[], &[], false),
        ("writing the weights", &[], &[], false),
        ("weights written", &[], &[CHECKPOINT[0]], false),
        (
            "optimizer written",
            &[],
            &[CHECKPOINT[0], CHECKPOINT[1]],
            false,
        ),
        ("all written", &[], &CHECKPOINT, true),
        ("weights renamed", &[CHECKPOINT[0]], &CHECKPOINT[1..], true),
        (
            "optimizer renamed",
            &CHECKPOINT[..2],
            &CHECKPOINT[2..],
            true,
        ),
    ];
    for (i, (moment, renamed, pendings, completes)) in cases.into_iter().enumerate() {
        let out = dir.path().join(format!("case{i}"));
        std::fs::create_dir(&out).expect("case dir");
        for name in CHECKPOINT {
            let from = if renamed.contains(&name) {
                &second
            } else {
                &first
            };
            std::fs::copy(from.join(name), out.join(name)).expect("copy");
        }
        for name in pendings {
            std::fs::copy(second.join(name), out.join(pending(name))).expect("copy");
        }
        if moment == "writing the weights" {
            std::fs::write(
                out.join(format!(".{}.4242.0.tmp", pending(CHECKPOINT[0]))),
                &bytes(&second, CHECKPOINT[0])[..100],
            )
            .expect("a partial temporary file");
        }
        assert_loadable(&spec, &out, moment);

        let resumed = cnnc(&["train", arg(&spec), "--resume", arg(&out), "--epochs", "3"]);
        assert_status(&resumed, 0);
        let (text, notes) = (stdout(&resumed), stderr(&resumed));
        assert_eq!(
            text.contains("epoch 2/3"),
            !completes,
            "{moment}: resumed from the wrong save:\n{text}"
        );
        let notice = match (moment, completes) {
            ("before the save", _) => None,
            (_, true) => Some("that save was complete and is now committed"),
            (_, false) => {
                Some("its partial files were deleted and the previous checkpoint is used")
            }
        };
        if let Some(notice) = notice {
            assert!(notes.contains(notice), "{moment}: {notes}");
        }
        assert_eq!(hidden(&out), Vec::<String>::new(), "{moment}");
        for file in CHECKPOINT.iter().take(2) {
            assert!(
                bytes(&straight, file) == bytes(&out, file),
                "{moment}: {file} differs from the uninterrupted run's"
            );
        }
    }
}

#[test]
fn a_full_disk_names_the_file_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path(), 120);
    let unit = limit_unit(dir.path());
    let (straight, out) = (dir.path().join("straight"), dir.path().join("run"));
    for optimizer in ["sgd", "adam"] {
        let flags = ["--batch-size", "8", "--optimizer", optimizer];
        let with = |epochs: &'static str| [&flags[..], &["--epochs", epochs]].concat();
        for path in [&straight, &out] {
            let _ = std::fs::remove_dir_all(path);
        }
        assert_status(&train(&spec, &data, &straight, &with("2")), 0);
        assert_status(&train(&spec, &data, &out, &with("1")), 0);
        let before = files(&out);
        let size = |name: &str| before[name].len() as u64;

        // A limit under the weights' size fails the first file of the save; one between the
        // weights' and Adam's optimizer state (twice as large) fails the second, after the
        // weights were written in full.
        let mut limits = vec![(size("model.safetensors") / 2 / unit, "model.safetensors")];
        if optimizer == "adam" {
            let limit = size("model.safetensors").div_ceil(unit);
            assert!(limit * unit < size("optimizer.state"));
            limits.push((limit, "optimizer.state"));
        }
        for (limit, file) in limits {
            let args = ["train", arg(&spec), "--resume", arg(&out), "--epochs", "2"];
            let output = limited(limit, &args);
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{message}");
            let pending = out.join(format!(".{file}.pending"));
            assert!(
                message.contains(&format!(
                    "error: cannot save the checkpoint of step 30 in {} (the checkpoint of \
                     step 15 is kept): cannot write `{}`: File too large",
                    out.display(),
                    pending.display()
                )),
                "{optimizer}, {file}: {message}"
            );
            assert_eq!(hidden(&out), Vec::<String>::new(), "{optimizer}, {file}");
            assert!(
                files(&out) == before,
                "{optimizer}, {file}: the folder changed"
            );
        }

        // Over the checkpoint's size but under the chart's: the checkpoint is saved, the chart
        // is not, and the old chart stays whole.
        let limit = (size("optimizer.state") + 2048).div_ceil(unit);
        assert!(limit * unit < size("metrics.png"));
        let args = ["train", arg(&spec), "--resume", arg(&out), "--epochs", "2"];
        let output = limited(limit, &args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{message}");
        let chart = out.join("metrics.png");
        assert!(
            message.contains(&format!(
                "error: cannot write `{}`: File too large",
                chart.display()
            )),
            "{message}"
        );
        assert_eq!(hidden(&out), Vec::<String>::new());
        assert!(bytes(&out, "metrics.png") == before["metrics.png"]);
        assert!(bytes(&out, "metrics.csv") == before["metrics.csv"]);

        // Room again: the finished run writes the metrics it missed, and its checkpoint is the
        // uninterrupted run's.
        let resumed = cnnc(&["train", arg(&spec), "--resume", arg(&out), "--epochs", "2"]);
        assert_status(&resumed, 0);
        assert!(stdout(&resumed).contains("already trained 2 epochs"));
        let csv = String::from_utf8(bytes(&out, "metrics.csv")).expect("UTF-8");
        assert_eq!(csv.lines().count(), 3, "{csv}");
        for file in ["model.safetensors", "optimizer.state"] {
            assert!(
                bytes(&straight, file) == bytes(&out, file),
                "{optimizer}: {file} differs"
            );
        }
    }
}

#[test]
fn fmt_and_codegen_outputs_survive_a_full_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = tiny_spec(dir.path(), "tiny.cnn", 1, 8);
    for (command, target) in [("fmt", "out.yaml"), ("codegen", "model.rs")] {
        let target = dir.path().join(target);
        std::fs::write(&target, "the previous version\n").expect("old output");
        let mut args = vec![command, arg(&spec), "-o", arg(&target)];
        if command == "fmt" {
            args.extend(["--to", "yaml"]);
        }
        let output = limited(0, &args);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{command}: {message}");
        assert!(
            message.contains(&format!(
                "cannot write `{}`: File too large",
                target.display()
            )),
            "{command}: {message}"
        );
        assert_eq!(
            std::fs::read_to_string(&target).expect("old output"),
            "the previous version\n"
        );
        assert_eq!(hidden(dir.path()), Vec::<String>::new(), "{command}");
    }
}

#[test]
fn divergence_names_step_and_layer_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, data) = setup(dir.path(), 120);
    let spec = write(
        dir.path(),
        "named.cnn",
        "input (1, 8, 8)\nlayer1.0: conv2d(out_channels=4, kernel_size=3, padding=1)\n\
         layer1.1: relu\nlayer1.2: maxpool2d(kernel_size=2)\nflatten\nfc: linear(out_features=10)\n",
    );
    let out = dir.path().join("run");
    // The first epoch trains at 0.05; the schedule then multiplies the rate by 1e30.
    let flags = [
        "--batch-size",
        "8",
        "--lr",
        "0.05",
        "--schedule",
        "step",
        "--step-size",
        "1",
        "--gamma",
        "1e30",
        "--epochs",
        "1",
    ];
    assert_status(&train(&spec, &data, &out, &flags), 0);
    let before = files(&out);
    let output = cnnc(&["train", arg(&spec), "--resume", arg(&out), "--epochs", "3"]);
    assert_status(&output, 1);
    let message = stderr(&output);
    let error = message
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        error.starts_with(
            "error: training diverged at step 17 (epoch 2): layer `fc` (linear) produced \
             non-finite activations (inf) in the forward pass; the loss became NaN;"
        ) && error.ends_with(&format!(
            "; lower --lr; the last checkpoint in {} (step 15) is kept",
            out.display()
        )),
        "{message}"
    );
    assert!(files(&out) == before, "the checkpoint folder changed");
    assert_loadable(&spec, &out, "after the divergence");
}

#[test]
fn a_chart_that_cannot_be_written_says_the_checkpoint_was_saved() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (spec, data) = setup(dir.path(), 120);
    let unit = limit_unit(dir.path());
    let out = dir.path().join("run");
    let flags = ["--batch-size", "8", "--epochs", "1"];
    assert_status(&train(&spec, &data, &out, &flags), 0);
    let size = |name: &str| std::fs::metadata(out.join(name)).expect("a file").len();
    // Room for each checkpoint file, not for the chart.
    let limit = (size("optimizer.state").max(size("model.safetensors")) + 2048).div_ceil(unit);
    assert!(limit * unit < size("metrics.png"));
    let args = ["train", arg(&spec), "--resume", arg(&out), "--epochs", "2"];
    let output = limited(limit, &args);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{message}");
    let chart = out.join("metrics.png");
    let error = message
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "error: cannot write `{}`: File too large",
            chart.display()
        )) && error.ends_with(&format!(
            "; the checkpoint of step 30 is saved in {}, and `--resume {}` writes the metrics \
             again",
            out.display(),
            out.display()
        )),
        "{message}"
    );
    assert_eq!(run_state(&out)["step"], 30);
}

//! Resource bounds, end to end: every command that reads a spec (`check`, `summary`, `fmt`,
//! `codegen`) runs on generated worst cases that stay within the limits (a spec under 1 MiB, at
//! most 10,000 layers, nesting to the limit and past it), and each run must stay within a CPU
//! time and a peak memory that do not grow with what the input claims. Quadratic work (the
//! 60,000-key spec that once took 112 s) or memory sized by a header cannot come back unnoticed.
//!
//! The child's CPU time and peak resident memory are read from `/proc/<pid>/stat` and
//! `/proc/<pid>/status` while it runs (the final CPU time from its zombie, before it is reaped),
//! so the test is Linux-only and needs no extra crates. CPU time, not wall time, is bounded: the
//! machine may be busy with other builds. To bound another command (training on a hostile
//! dataset, running on hostile weights), add a [`Case`] with the files it needs, its command
//! lines and its limits, as the `.npy` case at the end does for `run`.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one command may cost.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// CPU seconds (user + system), in a debug build.
    cpu_seconds: f64,
    /// Peak resident memory.
    peak_bytes: u64,
    /// Bytes printed on the two streams together.
    output_bytes: u64,
}

/// The limits of every spec-reading command. The worst case within the spec limits takes about
/// 4 s of CPU and 115 MiB on a quiet machine (150,000 unknown arguments on one line: 150,000
/// diagnostics; `check --fix` twice that, as it checks the fixed text again), and up to five
/// times the CPU on a loaded host (21 s for `check --fix`, measured while the host ran our two
/// vCPUs at about 60 % of their speed and the tests beside it): the bound leaves room for that,
/// as the quadratic code this guards against took minutes on these inputs, and hangs past
/// [`MAX_WALL_SECONDS`]. Diagnostics are capped, so
/// only legitimate output is long (`fmt` reprints a spec of up to 1 MiB; `summary` writes a
/// table row per layer, as wide as the longest name).
const SPEC_LIMITS: Limits = Limits {
    cpu_seconds: 40.0,
    peak_bytes: 256 << 20,
    output_bytes: 8 << 20,
};

/// Wall-clock seconds before a run counts as hung and is killed.
const MAX_WALL_SECONDS: u64 = 120;

/// A generated input and the command lines run on it (`{}` stands for the first file's path).
struct Case {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>)>,
    commands: Vec<Vec<&'static str>>,
    limits: Limits,
}

impl Case {
    /// `check` (as text and JSON), `summary`, `fmt`, `codegen`, `draw` and `check --fix` on one
    /// spec.
    fn spec(name: &'static str, file: &'static str, text: String) -> Case {
        assert!(
            text.len() <= cnnc_spec::MAX_SOURCE_BYTES,
            "{name}: {} bytes is past the limit, not a worst case within it",
            text.len()
        );
        Case {
            name,
            files: vec![(file, text.into_bytes())],
            commands: vec![
                vec!["check", "--color", "never", "{}"],
                vec!["check", "--format", "json", "{}"],
                vec!["summary", "--color", "never", "{}"],
                vec!["fmt", "--color", "never", "{}"],
                vec!["codegen", "--color", "never", "{}"],
                vec!["draw", "--color", "never", "{}", "-o", "-"],
                // Last: it may rewrite the file.
                vec!["check", "--fix", "--color", "never", "{}"],
            ],
            limits: SPEC_LIMITS,
        }
    }

    /// The same input, other command lines.
    fn commands(mut self, commands: Vec<Vec<&'static str>>) -> Case {
        self.commands = commands;
        self
    }

    /// The same input, other limits.
    fn limits(mut self, limits: Limits) -> Case {
        self.limits = limits;
        self
    }
}

/// What one run cost.
#[derive(Debug)]
struct Usage {
    cpu_seconds: f64,
    peak_bytes: u64,
    output_bytes: u64,
    status: Option<i32>,
}

/// Runs `cnnc args` in `dir`, watching its CPU time and peak memory.
fn measure(dir: &Path, args: &[String]) -> Usage {
    let stdout = File::create(dir.join("stdout")).expect("stdout file");
    let stderr = File::create(dir.join("stderr")).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("cnnc runs");
    let proc_dir = Path::new("/proc").join(child.id().to_string());
    let started = Instant::now();
    let mut cpu_ticks = 0u64;
    let mut peak_bytes = 0u64;
    loop {
        if let Some(hwm) = std::fs::read_to_string(proc_dir.join("status"))
            .ok()
            .as_deref()
            .and_then(peak_resident)
        {
            peak_bytes = peak_bytes.max(hwm);
        }
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        let (state, ticks) = state_and_cpu(&stat);
        cpu_ticks = cpu_ticks.max(ticks);
        // A zombie has exited and its times are final; reaping it removes `/proc/<pid>`.
        if state == Some('Z') || stat.is_empty() {
            break;
        }
        if started.elapsed() > Duration::from_secs(MAX_WALL_SECONDS) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cnnc {args:?} still runs after {MAX_WALL_SECONDS} s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().expect("cnnc is reaped");
    let output_bytes = ["stdout", "stderr"]
        .iter()
        .map(|name| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len()))
        .sum();
    Usage {
        // The kernel reports times in USER_HZ, 100 per second on Linux.
        cpu_seconds: cpu_ticks as f64 / 100.0,
        peak_bytes,
        output_bytes,
        status: status.code(),
    }
}

/// `VmHWM` (peak resident set) of a `/proc/<pid>/status` text, in bytes.
fn peak_resident(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The state letter and user + system time (in ticks) of a `/proc/<pid>/stat` text.
fn state_and_cpu(stat: &str) -> (Option<char>, u64) {
    // The command name, in parentheses, may hold spaces: the fields follow the last `)`.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return (None, 0);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next());
    // Fields 14 and 15 of the file (utime, stime) are 11 and 12 after the state, field 3.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (state, tick(11) + tick(12))
}

/// Runs every command of `case` and asserts each stays within the bounds.
fn assert_bounded(case: &Case) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, bytes) in &case.files {
        std::fs::write(dir.path().join(name), bytes).expect("input written");
    }
    let first = case.files[0].0;
    let limits = case.limits;
    for command in &case.commands {
        let args: Vec<String> = command.iter().map(|arg| arg.replace("{}", first)).collect();
        let usage = measure(dir.path(), &args);
        let what = format!("{}: cnnc {}", case.name, args.join(" "));
        eprintln!("{what}: {usage:?}");
        assert!(
            matches!(usage.status, Some(0..=2)),
            "{what} crashed: {usage:?}"
        );
        assert!(
            usage.cpu_seconds <= limits.cpu_seconds,
            "{what} took {} s of CPU (limit {} s)",
            usage.cpu_seconds,
            limits.cpu_seconds
        );
        assert!(
            usage.peak_bytes <= limits.peak_bytes,
            "{what} peaked at {} MiB (limit {} MiB)",
            usage.peak_bytes >> 20,
            limits.peak_bytes >> 20
        );
        assert!(
            usage.output_bytes <= limits.output_bytes,
            "{what} printed {} bytes (limit {})",
            usage.output_bytes,
            limits.output_bytes
        );
    }
}

fn repeat(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n).map(f).collect()
}

#[test]
fn sixty_thousand_unknown_top_level_keys() {
    let keys = repeat(60_000, |i| format!("k{i}: 1\n"));
    assert_bounded(&Case::spec(
        "60,000 unknown keys",
        "keys.yaml",
        format!("input: [1, 8, 8]\nlayers: [relu]\n{keys}"),
    ));
}

#[test]
fn fifty_thousand_fixable_arguments_of_one_layer() {
    // Every key has a fix (`kernal_size` → `kernel_size`): the fixes and their report are
    // bounded too.
    let args = ", kernal_size: 3".repeat(50_000);
    assert_bounded(&Case::spec(
        "50,000 misspelt arguments",
        "typos.yaml",
        format!("input: [1, 8, 8]\nlayers:\n  - conv2d: {{out_channels: 2{args}}}\n"),
    ));
}

#[test]
fn fifty_thousand_unknown_arguments_of_one_layer() {
    let args = repeat(50_000, |i| format!(", a{i}: 1"));
    assert_bounded(&Case::spec(
        "50,000 unknown arguments",
        "args.yaml",
        format!(
            "input: [1, 8, 8]\nlayers:\n  - conv2d: {{out_channels: 2, kernel_size: 3{args}}}\n"
        ),
    ));
}

#[test]
fn a_750_kb_dsl_line_of_unknown_arguments() {
    let args = ", a=1".repeat(150_000);
    assert_bounded(&Case::spec(
        "150,000 unknown arguments on one line",
        "line.cnn",
        format!("input (1, 8, 8)\nconv2d(out_channels=2, kernel_size=3{args})\n"),
    ));
}

#[test]
fn ten_thousand_layers_each_valid_or_each_wrong() {
    let valid = repeat(9_998, |_| {
        "# a comment\nconv2d(out_channels=1, kernel_size=1)  # and another\n".to_owned()
    });
    let deep = format!("input (1, 8, 8)\n{valid}flatten\nlinear(out_features=2)\n");
    let spec_commands = Case::spec("", "", String::new()).commands;
    let (codegen, others): (Vec<_>, Vec<_>) = spec_commands
        .into_iter()
        .partition(|command| command[0] == "codegen");
    assert_bounded(&Case::spec("10,000 valid layers", "deep.cnn", deep.clone()).commands(others));
    // Generated code is legitimately large: about 1.6 KB of Rust and (while syn and prettyplease
    // hold it) 90 KB of memory per layer, linear in the layers (measured: 918 MiB and 9 s of CPU
    // for these 10,000 on a quiet machine; the CPU bound leaves room for a loaded host, as
    // `SPEC_LIMITS` does).
    assert_bounded(
        &Case::spec("10,000 valid layers", "deep.cnn", deep)
            .commands(codegen)
            .limits(Limits {
                cpu_seconds: 60.0,
                peak_bytes: 1536 << 20,
                output_bytes: 32 << 20,
            }),
    );
    let wrong = repeat(10_000, |_| {
        "  - conv2d: {out_channels: 0, kernel_size: 0, stride: 0}\n".to_owned()
    });
    assert_bounded(&Case::spec(
        "10,000 layers with three errors each",
        "wrong.yaml",
        format!("input: [1, 8, 8]\nlayers:\n{wrong}"),
    ));
    let too_many = "relu\n".repeat(10_001);
    assert_bounded(&Case::spec(
        "10,001 layers",
        "many.cnn",
        format!("input (1, 1, 1)\n{too_many}"),
    ));
}

#[test]
fn ten_thousand_layers_with_one_name() {
    let named = "x: relu\n".repeat(10_000);
    assert_bounded(&Case::spec(
        "10,000 duplicate names",
        "names.cnn",
        format!("input (1, 8, 8)\n{named}"),
    ));
}

#[test]
fn nesting_to_the_limit_and_far_past_it() {
    let at_limit = format!(
        "input (1, 8, 8)\nconv2d(out_channels=2, kernel_size={}3{})\n",
        "(".repeat(cnnc_spec::MAX_NESTING - 1),
        ")".repeat(cnnc_spec::MAX_NESTING - 1)
    );
    assert_bounded(&Case::spec("nesting at the limit", "nest.cnn", at_limit));
    let half = 500_000;
    assert_bounded(&Case::spec(
        "500,000 open brackets in the DSL",
        "brackets.cnn",
        format!("input (1, 8, 8)\nconv2d(kernel_size={}\n", "(".repeat(half)),
    ));
    assert_bounded(&Case::spec(
        "500,000 open brackets in YAML",
        "brackets.yaml",
        format!("input: [1, 8, 8]\nlayers: {}\n", "[".repeat(half)),
    ));
    let blocks = repeat(400, |depth| format!("{}- \n", "  ".repeat(depth)));
    assert_bounded(&Case::spec(
        "400 nested YAML block lists",
        "blocks.yaml",
        format!("input: [1, 8, 8]\nlayers:\n{blocks}"),
    ));
}

#[test]
fn lines_as_long_as_the_limit() {
    let long = cnnc_spec::MAX_SOURCE_BYTES - 100;
    assert_bounded(&Case::spec(
        "a 1 MiB comment",
        "comment.yaml",
        format!("# {}\ninput: [1, 8, 8]\nlayers: [relu]\n", "x".repeat(long)),
    ));
    assert_bounded(&Case::spec(
        "a 1 MiB invalid name",
        "name.yaml",
        format!(
            "input: [1, 8, 8]\nlayers:\n  - relu: {{name: \"{}\"}}\n",
            "a-".repeat(long / 2)
        ),
    ));
    // `summary` once panicked on a name wider than `format!` pads (65,535).
    assert_bounded(&Case::spec(
        "a 1 MiB valid name",
        "valid_name.cnn",
        format!("input (1, 8, 8)\n{}: relu\n", "a".repeat(long)),
    ));
    assert_bounded(&Case::spec(
        "a 1 MiB unknown kind",
        "kind.cnn",
        format!("input (1, 8, 8)\n{}\n", "k".repeat(long)),
    ));
    assert_bounded(&Case::spec(
        "a 1 MiB line of invisible characters",
        "invisible.cnn",
        format!("input (1, 8, 8)\nrelu{}\n", "\u{200b}".repeat(long / 3)),
    ));
}

#[test]
fn proc_fields_are_read_as_linux_writes_them() {
    let stat = "1234 (cnnc (test)) Z 1 2 3 4 5 6 7 8 9 10 250 30 0 0";
    assert_eq!(state_and_cpu(stat), (Some('Z'), 280));
    assert_eq!(state_and_cpu(""), (None, 0));
    let status = "Name:\tcnnc\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\n";
    assert_eq!(peak_resident(status), Some(2 << 20));
}

/// A `.npy` file: the format's header around `header_dict`, then `data`.
fn npy(header_dict: &str, data: &[u8]) -> Vec<u8> {
    let text = format!("{header_dict}\n");
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend(
        u16::try_from(text.len())
            .expect("a short header")
            .to_le_bytes(),
    );
    bytes.extend(text.as_bytes());
    bytes.extend(data);
    bytes
}

#[test]
fn run_on_an_input_whose_header_claims_2_to_the_60_samples() {
    // The pattern for commands beyond the spec readers: the files they need, their command line.
    let spec = "input (1, 4, 4)\nflatten\nlinear(out_features=2)\n";
    let claim =
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1152921504606846976, 1, 4, 4), }";
    let case = Case {
        name: "a .npy header claiming 2^60 samples",
        files: vec![
            ("tiny.cnn", spec.as_bytes().to_vec()),
            ("huge.npy", npy(claim, &[0; 64])),
        ],
        commands: vec![vec![
            "run", "{}", "--input", "huge.npy", "--output", "y.npy",
        ]],
        limits: Limits {
            cpu_seconds: 2.0,
            peak_bytes: 64 << 20,
            output_bytes: 4 << 10,
        },
    };
    assert_bounded(&case);
}

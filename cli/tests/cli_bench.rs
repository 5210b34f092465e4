//! `cnnc bench`: the JSON keys outside tools rely on, the measured or given peak, a bad
//! `--peak-gflops`, and the instruction-family cap `CNNC_SIMD`. One timed run each, so the figures mean nothing here; only their presence
//! and consistency are checked.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{assert_status, cnnc, stderr, stdout};

fn bench_json(extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "models/custom_cnn.yaml",
        "--runs",
        "1",
        "--no-memory",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let output = cnnc(&args);
    assert_status(&output, 0);
    serde_json::from_str(&stdout(&output)).expect("JSON output")
}

#[test]
fn json_holds_the_contract_keys_and_a_measured_peak() {
    let json = bench_json(&[]);
    for key in [
        "train_images_per_s",
        "infer64_images_per_s",
        "infer256_images_per_s",
        "latency_batch1_ms",
        "peak_gflops",
        "train_percent_of_peak",
    ] {
        let v = json[key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite() && v > 0.0, "{key}: {}", json[key]);
    }
    assert!(json["peak_rss_mb"].is_null(), "--no-memory");
    let source = json["peak_source"].as_str().unwrap_or_default();
    assert!(source.starts_with("measured: "), "{source}");
    // One entry per layer, in order; the ReLUs fused into the convolutions take no time.
    let layers = json["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 13);
    assert_eq!(layers[0]["name"], "layer1.0");
    assert_eq!(layers[1]["name"], "layer1.1");
    assert_eq!(layers[1]["forward_ms"], 0.0);
    assert_eq!(layers[1]["backward_ms"], 0.0);
    assert_eq!(layers[1]["fused_into"], "layer1.0");
    // The max pool after the fused ReLU is applied by the convolution too.
    assert_eq!(layers[2]["fused_into"], "layer1.0");
    assert!(layers[0]["fused_into"].is_null());
    // FLOPs count what each layer computes, pooled or not: 24.7 MFLOP forward, 69.2 training.
    let mflop = |key: &str| json[key].as_f64().unwrap_or(f64::NAN);
    assert!(
        (mflop("forward_mflop_per_image") - 24.70).abs() < 0.01,
        "{json}"
    );
    assert!(
        (mflop("train_mflop_per_image") - 69.21).abs() < 0.01,
        "{json}"
    );
    // The share of peak is the training rate's FLOPs over the peak.
    let train = json["train_images_per_s"].as_f64().unwrap();
    let flop = json["train_mflop_per_image"].as_f64().unwrap() * 1e6;
    let percent = 100.0 * train * flop / (json["peak_gflops"].as_f64().unwrap() * 1e9);
    let reported = json["train_percent_of_peak"].as_f64().unwrap();
    assert!(
        (percent - reported).abs() < 1e-6 * percent,
        "{percent} vs {reported}"
    );
}

#[test]
fn an_add_a_batch_norm_stores_names_it_and_keeps_its_backward() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let spec = support::write(
        dir.path(),
        "block.cnn",
        "input (2, 8, 8)\n\
         conv: conv2d(out_channels=2, kernel_size=3, padding=1, bias=false)\n\
         bn: batchnorm2d\n\
         sum: add(bn, input)\n\
         act: relu\n\
         flatten\n\
         fc: linear(out_features=3)\n",
    );
    let output = cnnc(&[
        "bench",
        support::arg(&spec),
        "--runs",
        "1",
        "--no-memory",
        "--format",
        "json",
    ]);
    assert_status(&output, 0);
    let json: Value = serde_json::from_str(&stdout(&output)).expect("JSON output");
    let layers = json["layers"].as_array().expect("layers");
    let layer = |name: &str| {
        layers
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no layer {name}: {json}"))
    };
    // The batch norm stores the sum and its ReLU; the add's backward is its own.
    assert_eq!(layer("sum")["stored_by"], "bn");
    assert_eq!(layer("sum")["forward_ms"], 0.0);
    assert_eq!(layer("act")["fused_into"], "sum");
    assert!(layer("bn")["stored_by"].is_null());
    assert!(layer("conv")["stored_by"].is_null());
}

#[test]
fn a_given_peak_replaces_the_measurement() {
    let json = bench_json(&["--peak-gflops", "100"]);
    assert_eq!(json["peak_gflops"], 100.0);
    assert_eq!(json["peak_source"], "--peak-gflops");
}

#[test]
fn a_peak_that_is_not_a_positive_number_is_refused() {
    for bad in ["0", "-3", "fast", "inf"] {
        let output = cnnc(&[
            "bench",
            "models/custom_cnn.yaml",
            &format!("--peak-gflops={bad}"),
        ]);
        assert_status(&output, 2);
        assert!(
            stderr(&output).contains(&format!("`{bad}` is not a positive number of GFLOP/s")),
            "{bad}: {}",
            stderr(&output)
        );
    }
}

/// `cnnc bench` on the seed model, once, with the environment variable `key` set to `value`.
fn bench_with(key: &str, value: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args([
            "bench",
            "models/custom_cnn.yaml",
            "--runs",
            "1",
            "--no-memory",
            "--format",
            "json",
        ])
        .env(key, value)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cnnc runs")
}

#[test]
fn the_threads_round_trip_is_measured_with_two_threads_only() {
    let json = |threads: &str| -> Value {
        let output = bench_with("RAYON_NUM_THREADS", threads);
        assert_status(&output, 0);
        serde_json::from_str(&stdout(&output)).expect("JSON output")
    };
    assert!(json("1")["thread_round_trip_ns"].is_null());
    // Two threads: a round trip before and after the workloads, or null where the machine was
    // too busy to run both threads at once for half a second.
    let two = json("2");
    let trip = &two["thread_round_trip_ns"];
    if !trip.is_null() {
        for side in ["before", "after"] {
            let ns = trip[side].as_f64().unwrap_or(f64::NAN);
            assert!(ns > 0.0 && ns < 1e6, "{side}: {trip}");
        }
    }
}

#[test]
fn simd_cap_picks_the_kernels_and_the_report_names_them() {
    let output = bench_with("CNNC_SIMD", "avx2");
    assert_status(&output, 0);
    let json: Value = serde_json::from_str(&stdout(&output)).expect("JSON output");
    // AVX2 on any CPU that has it (a cap: a CPU without runs its widest, the portable loops).
    let isa = json["isa"].as_str().unwrap_or_default();
    assert!(["AVX2+FMA", "scalar"].contains(&isa), "{json}");
    let source = json["peak_source"].as_str().unwrap_or_default();
    assert!(source.contains(isa), "{source}");
    assert!(json["train_images_per_s"].as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn an_unknown_simd_cap_is_refused_naming_the_variable_and_the_values() {
    let output = bench_with("CNNC_SIMD", "sse4");
    assert_status(&output, 2);
    let err = stderr(&output);
    assert!(
        err.contains("CNNC_SIMD=\"sse4\"") && err.contains("avx512, avx2, none"),
        "{err}"
    );
    assert!(stdout(&output).is_empty(), "{}", stdout(&output));
}

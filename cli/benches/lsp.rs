//! `cnnc lsp` stays responsive: a 1,000-layer spec re-analysed after a one-character change
//! (parse, check, shape hints, outline: what the server does before it publishes) should take
//! well under 20 ms.
//!
//! `cargo bench --bench lsp`

// The server's analysis lives in the binary's `cli` module; the benchmark compiles the same file.
#[allow(dead_code)]
#[path = "../src/cli/lsp/analysis.rs"]
mod analysis;

use cnnc_spec::{Format, Source};
use criterion::{Criterion, criterion_group, criterion_main};

/// 1,000 layers: 500 padded convolutions, each followed by a ReLU.
fn thousand_layers() -> String {
    let mut text = String::from("model Deep\ninput (8, 16, 16)\n");
    for i in 0..500 {
        text.push_str(&format!(
            "conv{i}: conv2d(out_channels=8, kernel_size=3, padding=1)\nrelu\n"
        ));
    }
    text
}

fn reanalyse_after_a_change(c: &mut Criterion) {
    let text = thousand_layers();
    // The change: the last convolution's kernel becomes 5 and its padding 2 (as typed).
    let changed = text.replacen(
        "conv499: conv2d(out_channels=8, kernel_size=3, padding=1)",
        "conv499: conv2d(out_channels=8, kernel_size=5, padding=2)",
        1,
    );
    assert_ne!(text, changed);
    let mut group = c.benchmark_group("lsp");
    group.sample_size(20);
    group.bench_function("reanalyse_1000_layers", |b| {
        b.iter(|| {
            let source = Source::new("deep.cnn", changed.as_str(), Format::Dsl);
            let analysis = analysis::analyze(&source);
            assert!(analysis.diagnostics.is_empty());
            let hints = analysis.shape_hints(&source);
            assert_eq!(hints.len(), 1000);
            (hints, analysis.symbols())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // No plots: they need a system font.
    config = Criterion::default().without_plots();
    targets = reanalyse_after_a_change
}
criterion_main!(benches);

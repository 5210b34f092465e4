//! End-to-end tests of `cnnc draw`: a well-formed, deterministic SVG of the seed model written
//! atomically or to standard output, groups collapsed by `--depth`, specs too large to draw
//! collapsed or refused with the depth that fits, and specs with errors refused.

mod support;

use support::{arg, cnnc, stderr, stdout, write, xml};

fn count(svg: &str, class: &str) -> usize {
    svg.matches(&format!("<g class=\"{class}\">")).count()
}

#[test]
fn seed_model_drawing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("net.svg");
    let run = cnnc(&["draw", "models/custom_cnn.yaml", "-o", arg(&out)]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let svg = std::fs::read_to_string(&out).expect("drawing written");
    let elements = xml::elements(&svg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(elements[0], "svg");
    // input, 13 layers, output; layer1..layer3 as boxes; 14 edges in a chain.
    assert_eq!(count(&svg, "node"), 15);
    assert_eq!(count(&svg, "group"), 3);
    assert_eq!(count(&svg, "edge"), 14);
    assert!(svg.contains(">conv2d(out_channels=32, kernel_size=5, padding=2)</text>"));
    assert!(svg.contains(">[64, 4, 4]</text>"), "shapes on the edges");
    // The same drawing on standard output, byte for byte.
    let piped = cnnc(&["draw", "models/custom_cnn.cnn", "-o", "-"]);
    assert_eq!(piped.status.code(), Some(0));
    assert_eq!(stdout(&piped), svg);
    insta::assert_snapshot!(svg);

    let collapsed = cnnc(&["draw", "models/custom_cnn.yaml", "--depth", "1", "-o", "-"]);
    assert_eq!(collapsed.status.code(), Some(0));
    let svg = stdout(&collapsed);
    xml::elements(&svg).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(count(&svg, "group"), 0);
    assert_eq!(count(&svg, "node"), 9);
    assert!(svg.contains(">3 layers, 2,432 params</text>"));
}

/// `groups` groups of `each` ReLUs, as a DSL spec.
fn wide_spec(dir: &std::path::Path, groups: usize, each: usize) -> std::path::PathBuf {
    let mut text = String::from("model Wide\ninput (1, 4, 4)\n");
    for g in 0..groups {
        for l in 0..each {
            text.push_str(&format!("b{g}.r{l}: relu\n"));
        }
    }
    text.push_str("flatten\nlinear(out_features=2)\n");
    write(dir, "wide.cnn", &text)
}

#[test]
fn large_specs_are_collapsed_or_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = wide_spec(dir.path(), 60, 10);
    // 600 layers in 60 groups do not fit 600 boxes: without --depth the groups are collapsed,
    // with a notice.
    let run = cnnc(&["draw", arg(&spec), "-o", "-"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert!(stderr(&run).contains("drawn with its groups open to depth 1 (--depth 1)"));
    assert_eq!(count(&stdout(&run), "node"), 64);
    // Asked for explicitly, the full depth is refused, naming the depth that fits.
    let out = dir.path().join("wide.svg");
    let refused = cnnc(&["draw", arg(&spec), "--depth", "2", "-o", arg(&out)]);
    assert_eq!(refused.status.code(), Some(1));
    let message = stderr(&refused);
    assert!(
        message
            .contains("at --depth 2 takes 664 boxes, layers and groups (cnnc draws at most 600)")
            && message.contains("pass --depth 1"),
        "{message}"
    );
    assert!(!out.exists(), "nothing is written when refused");
    // 600 layers at the top level: no depth helps.
    let flat = wide_spec(dir.path(), 1, 600);
    let text = std::fs::read_to_string(&flat)
        .expect("spec")
        .replace("b0.", "");
    let flat = write(dir.path(), "flat.cnn", &text);
    let refused = cnnc(&["draw", arg(&flat), "-o", arg(&out)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("no depth makes it small enough"),
        "{}",
        stderr(&refused)
    );
    assert!(!out.exists());
}

#[test]
fn bad_specs_and_paths_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let spec = write(
        dir.path(),
        "bad.cnn",
        "input (3, 8, 8)\nflatten\nconv2d(out_channels=4, kernel_size=3)\n",
    );
    let out = dir.path().join("bad.svg");
    let refused = cnnc(&["draw", "--color", "never", arg(&spec), "-o", arg(&out)]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("error["), "{}", stderr(&refused));
    assert!(!out.exists());
    let nowhere = dir.path().join("missing/dir/net.svg");
    let failed = cnnc(&["draw", "models/custom_cnn.yaml", "-o", arg(&nowhere)]);
    assert_eq!(failed.status.code(), Some(2));
    assert!(stderr(&failed).contains("net.svg"), "{}", stderr(&failed));
    let usage = cnnc(&["draw", "models/custom_cnn.yaml"]);
    assert_eq!(usage.status.code(), Some(2), "-o is required");
}

#[test]
fn graph_spec_drawing() {
    let run = cnnc(&["draw", "tests/fixtures/grads/small_graph.cnn", "-o", "-"]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let svg = stdout(&run);
    xml::elements(&svg).unwrap_or_else(|e| panic!("{e}"));
    // input, 30 layers, output; block, down, down.downsample and se as boxes.
    assert_eq!(count(&svg, "node"), 32);
    assert_eq!(count(&svg, "group"), 4);
    // One edge per layer input (two adds, a concat and a mul read two) and the output's.
    assert_eq!(count(&svg, "edge"), 30 + 4 + 1);
    assert!(svg.contains(">down.downsample</text>"));
    assert!(svg.contains(">concat</text>"));
    insta::assert_snapshot!(svg);
}

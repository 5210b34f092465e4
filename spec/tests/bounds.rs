//! Resource bounds of the spec front-ends: how much of a file is read, how deep a spec may nest,
//! how huge numbers are reported, and files that are not UTF-8 text or not files at all.

use std::fs::File;

use cnnc_spec::{
    Code, Diagnostic, Error, Format, MAX_NESTING, MAX_SOURCE_BYTES, Source, Span, compile,
    parse_dsl, parse_yaml, read_text,
};

/// The only diagnostic of `result`, which must have failed.
fn only<T: std::fmt::Debug>(result: Result<T, Vec<Diagnostic>>) -> Diagnostic {
    match result.expect_err("refused").as_slice() {
        [one] => one.clone(),
        many => panic!("{many:?}"),
    }
}

#[test]
fn at_most_one_mebibyte_of_a_spec_file_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, "layers: [[[[").expect("written");
    // A tebibyte: reading it whole would need that much memory.
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1 << 40))
        .expect("sparse file");
    let text = read_text(&path).expect("read");
    assert_eq!(text.len(), MAX_SOURCE_BYTES + 1);
    match cnnc_spec::load(&path).expect_err("refused") {
        Error::Invalid {
            count, rendered, ..
        } => {
            assert_eq!(count, 1);
            assert!(
                rendered.starts_with(
                    "error[E0003]: the spec is larger than the limit of 1048576 bytes (1 MiB)"
                ),
                "{rendered}"
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn text_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("latin1.cnn");
    // Columns count characters: `né` is two.
    std::fs::write(&path, b"input (1, 4, 4)\n# n\xc3\xa9 caf\xe9\nrelu\n").expect("written");
    let error = read_text(&path).expect_err("refused");
    assert!(matches!(
        error,
        Error::NotUtf8 {
            byte: 0xe9,
            line: 2,
            column: 9,
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        format!(
            "spec {} is not UTF-8 text: byte 0xe9 at line 2, column 9 is not valid UTF-8; save \
             the file as UTF-8",
            path.display()
        )
    );
}

#[test]
fn directories_and_unknown_extensions_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("model.yaml");
    std::fs::create_dir(&folder).expect("dir");
    assert_eq!(
        cnnc_spec::load(&folder).expect_err("refused").to_string(),
        format!(
            "cannot read spec {}: it is a directory; pass a .yaml, .yml or .cnn file",
            folder.display()
        )
    );
    let text = dir.path().join("model.txt");
    assert!(matches!(
        cnnc_spec::load(&text),
        Err(Error::UnknownFormat { .. })
    ));
}

#[test]
fn yaml_nesting_stops_at_the_first_collection_too_deep() {
    let deep = 1000;
    // Flow collections: the 17th `[` (`layers: ` is 8 bytes).
    let flow = format!(
        "input: [3, 32, 32]\nlayers: {}{}\n",
        "[".repeat(deep),
        "]".repeat(deep)
    );
    let d = only(parse_yaml(&flow));
    assert_eq!(d.code, Code::NestingTooDeep);
    assert_eq!(
        d.message,
        format!("lists and mappings are nested more than {MAX_NESTING} deep")
    );
    let bracket = "input: [3, 32, 32]\nlayers: ".len() + MAX_NESTING;
    assert_eq!(d.span, Span::new(bracket, bracket + 1));
    // Block collections: a sequence in a sequence in ...
    let block: String = (1..=40).map(|i| format!("{}-\n", "  ".repeat(i))).collect();
    let d = only(parse_yaml(&format!("input: [3, 32, 32]\nlayers:\n{block}")));
    assert_eq!(d.code, Code::NestingTooDeep);
    // At the limit, nesting is not the problem.
    let limit = format!(
        "input: [3, 32, 32]\nlayers: {}{}\n",
        "[".repeat(MAX_NESTING - 1),
        "]".repeat(MAX_NESTING - 1)
    );
    assert!(
        parse_yaml(&limit)
            .err()
            .is_none_or(|ds| ds.iter().all(|d| d.code != Code::NestingTooDeep))
    );
}

#[test]
fn dsl_brackets_in_comments_and_strings_do_not_nest() {
    let deep = "(".repeat(40);
    let text = format!("model \"{deep}\"\ninput (1, 4, 4)  # {deep}\nrelu\n");
    assert!(parse_dsl(&text).is_ok());
    let text = format!("input (1, 4, 4)\nconv2d(out_channels=2, kernel_size={deep}3\n");
    let d = only(parse_dsl(&text));
    assert_eq!(d.code, Code::NestingTooDeep);
    let bracket = "input (1, 4, 4)\nconv2d(out_channels=2, kernel_size=".len() + MAX_NESTING - 1;
    assert_eq!(d.span, Span::new(bracket, bracket + 1));
}

#[test]
fn integers_beyond_64_bits_are_too_large_in_both_languages() {
    let digits = "99999999999999999999999";
    for (text, format) in [
        (
            format!("input: [1, 4, 4]\nlayers:\n  - linear: {{out_features: {digits}}}\n"),
            Format::Yaml,
        ),
        (
            format!("input (1, 4, 4)\nflatten\nlinear(out_features={digits})\n"),
            Format::Dsl,
        ),
    ] {
        let start = text.find(digits).expect("digits");
        let source = Source::new("big", text, format);
        let d = only(compile(&source));
        assert_eq!(d.code, Code::TooLarge);
        assert_eq!(
            d.message,
            "the number is larger than the size limit of 1048576"
        );
        assert_eq!(d.span, Span::new(start, start + digits.len()));
    }
}

#[test]
fn aliases_that_expand_to_millions_of_values_are_refused() {
    // "Billion laughs": each line repeats the previous one ten times.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let uses = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{uses}]\n"));
    }
    text.push_str("input: [3, 32, 32]\nlayers: *a9\n");
    let d = only(parse_yaml(&text));
    assert_eq!(d.code, Code::YamlSyntax);
    assert_eq!(
        d.message,
        "invalid YAML: the document holds more than 250000 values (counting each use of an alias)"
    );
}

#[test]
fn max_pool_windows_beyond_sixteen_bit_positions_are_refused() {
    let spec = |kind: &str, [kh, kw]: [usize; 2]| {
        let text = format!(
            "input: [1, {kh}, {kw}]\nlayers:\n  - {kind}: {{kernel_size: [{kh}, {kw}]}}\n  - flatten: {{}}\n  - linear: {{out_features: 2}}\n"
        );
        Source::new("pool", text, Format::Yaml)
    };
    let d = only(compile(&spec("maxpool2d", [255, 257])));
    assert_eq!(d.code, Code::TooLarge);
    assert_eq!(
        d.message,
        "the window of layer 0 (maxpool2d) has 65535 positions, more than the limit of 65534"
    );
    // The limit itself, and average pooling (which records no positions), are fine.
    assert!(compile(&spec("maxpool2d", [2, 32767])).is_ok());
    assert!(compile(&spec("avgpool2d", [255, 257])).is_ok());
}

/// The errors of `text` (DSL), with their codes.
fn graph_errors(text: &str) -> Vec<Diagnostic> {
    let source = Source::new("graph.cnn", text, Format::Dsl);
    compile(&source).expect_err("refused")
}

#[test]
fn exponential_block_nests_are_refused_before_they_expand() {
    // Block k holds two instances of block k-1: 2^40 layers if expanded.
    let mut text = String::from("input (1, 4, 4)\nblock B0 { relu }\n");
    for k in 1..=40 {
        text.push_str(&format!("block B{k} {{ B{}(repeat=2) }}\n", k - 1));
    }
    text.push_str("B40\nflatten\n");
    let started = std::time::Instant::now();
    let errors = graph_errors(&text);
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, Code::ExpansionTooLarge);
}

#[test]
fn wide_repetition_is_refused_at_the_layer_limit() {
    let errors =
        graph_errors("input (1, 4, 4)\nblock Two { relu\n relu }\nTwo(repeat=6000)\nflatten\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, Code::ExpansionTooLarge);
    let errors = graph_errors("input (1, 4, 4)\nrelu(repeat=1000000000000)\nflatten\n");
    assert_eq!(errors[0].code, Code::InvalidValue);
    assert!(
        errors[0].message.contains("`repeat`"),
        "{}",
        errors[0].message
    );
}

#[test]
fn block_nesting_deeper_than_the_limit_is_refused() {
    // A chain of blocks, each holding the next: deep, not wide.
    let depth = MAX_NESTING + 4;
    let mut text = String::from("input (1, 4, 4)\n");
    for k in 0..depth {
        text.push_str(&format!("block C{k} {{ C{}(repeat=1) }}\n", k + 1));
    }
    text.push_str(&format!("block C{depth} {{ relu }}\nC0\nflatten\n"));
    let errors = graph_errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].code, Code::ExpansionTooLarge);
    assert!(
        errors[0].message.contains("nested"),
        "{}",
        errors[0].message
    );
}

#[test]
fn an_expression_nested_past_the_limit_is_refused_in_yaml() {
    // The DSL refuses the brackets before parsing; YAML hands the plain scalar to the
    // expression parser, which must not recurse without bound.
    let deep = format!("{}1{}", "(".repeat(100_000), " + 1)".repeat(100_000));
    let text = format!(
        "input: [1, 4, 4]\nlayers:\n  - conv2d:\n      out_channels: {deep}\n      kernel_size: 1\n"
    );
    let d = only(parse_yaml(&text));
    assert_eq!(d.code, Code::BadExpression);
}

#[test]
fn many_references_are_resolved_in_linear_time() {
    let count = 9_000;
    let mut good = String::from("input (1, 2, 2)\nl0: relu\n");
    let mut bad = good.clone();
    for i in 1..count {
        good.push_str(&format!("l{i}: relu(l{})\n", i - 1));
        bad.push_str(&format!("l{i}: relu(m{})\n", i - 1));
    }
    good.push_str("flatten\n");
    bad.push_str("flatten\n");
    let started = std::time::Instant::now();
    let source = Source::new("many.cnn", good, Format::Dsl);
    let (model, _) = compile(&source).expect("valid");
    assert_eq!(model.layers().len(), count + 1);
    let errors = graph_errors(&bad);
    assert_eq!(errors.len(), count - 1);
    assert!(errors.iter().all(|e| e.code == Code::UnknownReference));
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
}

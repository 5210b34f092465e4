//! Writes the seed corpus, `fuzz/corpus/<target>/`: every model in `models/` and a choice of
//! `spec/tests/corpus` specs, the seed model's weights and a few small tensor files, and small
//! npy, IDX (raw and gzip), CIFAR-10, PNG and JPEG files, and small ONNX models. Deterministic; rerun after changing it
//! with `cargo run -p cnnc-fuzz --example seeds`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use cnnc_runtime::Network;
use cnnc_runtime::weights::{self, TensorData};
use flate2::Compression;
use flate2::write::GzEncoder;
use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use ndarray::{ArrayD, IxDyn};

/// Specs of `spec/tests/corpus/` worth mutating: each reaches a different diagnostic.
const SPEC_SEEDS: &[&str] = &[
    "valid/all_arguments_explicit.yaml",
    "valid/ceil_mode.yaml",
    "valid/minimal.cnn",
    "valid/mixed_syntax.cnn",
    "valid/rectangular.cnn",
    "valid/sequential_names.yaml",
    "valid/graph_residual.cnn",
    "valid/graph_unet.yaml",
    "warn/bias_before_batchnorm.yaml",
    "warn/pool_drops_edge.yaml",
    "warn/redundant_flatten.cnn",
    "warn/strided_conv_drops.cnn",
    "invalid/many_errors.yaml",
    "invalid/wrong_types.yaml",
    "invalid/huge_integer.yaml",
    "invalid/yaml_unclosed_brace.yaml",
    "invalid/unknown_top_level_key.yaml",
    "invalid/dsl_unclosed_paren.cnn",
    "invalid/duplicate_argument.cnn",
    "invalid/nesting_too_deep.cnn",
    "invalid/tensor_over_limit.cnn",
    "invalid/pair_of_three.cnn",
    "invalid/graph_add_shapes.yaml",
    "invalid/graph_block_arguments.cnn",
    "invalid/graph_expression_values.cnn",
    "invalid/graph_unknown_reference.cnn",
    "invalid/graph_recursive_block.yaml",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = fuzz
        .parent()
        .ok_or("the fuzz crate sits in the repository")?;
    let corpus = fuzz.join("corpus");
    if corpus.exists() {
        fs::remove_dir_all(&corpus)?;
    }
    specs(repo, &corpus)?;
    safetensors(repo, &corpus.join("safetensors"))?;
    npy(&corpus.join("npy"))?;
    idx(&corpus.join("idx"))?;
    cifar(&corpus.join("cifar"))?;
    images(&corpus.join("image"))?;
    onnx(&corpus.join("onnx"))?;
    println!("wrote {}", corpus.display());
    Ok(())
}

fn put(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(dir.join(name), bytes)
}

fn specs(repo: &Path, corpus: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo.join("models"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.extend(
        SPEC_SEEDS
            .iter()
            .map(|s| repo.join("spec/tests/corpus").join(s)),
    );
    for path in files {
        let target = match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") => "spec_yaml",
            Some("cnn") => "spec_dsl",
            _ => continue,
        };
        let parent = path
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        put(
            &corpus.join(target),
            &format!("{parent}_{name}"),
            &fs::read(&path)?,
        )?;
    }
    Ok(())
}

fn safetensors(repo: &Path, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let model = cnnc_spec::load(&repo.join("models/custom_cnn.yaml"))?;
    let mut net = Network::from_model(&model, 0)?;
    let metadata = BTreeMap::from([
        ("format".to_owned(), "pt".to_owned()),
        ("cnnc.step".to_owned(), "0".to_owned()),
    ]);
    let state = weights::state_dict(&mut net);
    put(
        dir,
        "custom_cnn_seed0.safetensors",
        &weights::serialize(&state, &metadata),
    )?;
    // The small tensors alone, at their true shapes: a few kilobytes that reach the strict
    // load's checks of values (the whole model is too big to mutate quickly).
    let small: Vec<(String, TensorData)> = state
        .into_iter()
        .filter(|(name, _)| name.ends_with(".bias") || name == "fc2.weight")
        .collect();
    put(
        dir,
        "custom_cnn_small_tensors.safetensors",
        &weights::serialize(&small, &metadata),
    )?;
    let tensor = |shape: &[usize], values: Vec<f32>| {
        ArrayD::from_shape_vec(IxDyn(shape), values).map(TensorData::F32)
    };
    let mixed = vec![
        (
            "fc.weight".to_owned(),
            tensor(&[2, 3], vec![0.5, -1.0, 2.0, 0.0, 1e-3, -7.25])?,
        ),
        ("fc.bias".to_owned(), tensor(&[2], vec![0.1, -0.1])?),
        (
            "bn.running_var".to_owned(),
            ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f64, 2.0]).map(TensorData::F64)?,
        ),
        (
            "bn.num_batches_tracked".to_owned(),
            TensorData::I64(ArrayD::from_elem(IxDyn(&[]), 3)),
        ),
    ];
    put(
        dir,
        "mixed_dtypes.safetensors",
        &weights::serialize(&mixed, &metadata),
    )?;
    put(
        dir,
        "empty.safetensors",
        &weights::serialize(&[], &BTreeMap::new()),
    )?;
    Ok(())
}

/// A `.npy` file as NumPy writes it (version 1.0), from a header dict and raw data.
fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let fortran = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn npy(dir: &Path) -> std::io::Result<()> {
    let f32s: Vec<u8> = (0..6)
        .flat_map(|i| (i as f32 * 0.5 - 1.0).to_le_bytes())
        .collect();
    put(
        dir,
        "f32_2x3.npy",
        &npy_bytes("<f4", false, "(2, 3)", &f32s),
    )?;
    let big: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_be_bytes()).collect();
    put(
        dir,
        "f32_big_endian.npy",
        &npy_bytes(">f4", false, "(3, 2)", &big),
    )?;
    let f64s: Vec<u8> = (0..4)
        .flat_map(|i| (i as f64 / 3.0).to_le_bytes())
        .collect();
    put(
        dir,
        "f64_fortran.npy",
        &npy_bytes("<f8", true, "(2, 2)", &f64s),
    )?;
    let i64s: Vec<u8> = [-3i64, 0, 16_777_216]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    put(dir, "i64.npy", &npy_bytes("<i8", false, "(3,)", &i64s))?;
    let i32s: Vec<u8> = [7i32, -7].iter().flat_map(|v| v.to_le_bytes()).collect();
    put(dir, "i32.npy", &npy_bytes("<i4", false, "(2,)", &i32s))?;
    put(
        dir,
        "u8_image.npy",
        &npy_bytes("|u1", false, "(1, 1, 4, 4)", &[9; 16]),
    )?;
    put(
        dir,
        "scalar.npy",
        &npy_bytes("<f4", false, "()", &1.5f32.to_le_bytes()),
    )?;
    put(dir, "empty.npy", &npy_bytes("<f4", false, "(0, 3)", &[]))?;
    // Version 2.0: a 4-byte header length.
    let mut v2 = npy_bytes("<f4", false, "(2,)", &[0; 8]);
    v2[6] = 2;
    let len = u16::from_le_bytes([v2[8], v2[9]]);
    v2.splice(8..10, (u32::from(len) + 2).to_le_bytes());
    v2.splice(12..12, *b"  ");
    put(dir, "version2.npy", &v2)
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn idx(dir: &Path) -> std::io::Result<()> {
    let header = |magic: u32, dims: &[u32]| {
        let mut bytes = magic.to_be_bytes().to_vec();
        dims.iter()
            .for_each(|d| bytes.extend_from_slice(&d.to_be_bytes()));
        bytes
    };
    let mut images = header(0x0803, &[2, 28, 28]);
    images.extend((0..2 * 28 * 28).map(|i| (i % 251) as u8));
    put(dir, "train-images-idx3-ubyte", &images)?;
    put(dir, "train-images-idx3-ubyte.gz", &gzip(&images)?)?;
    let mut small = header(0x0803, &[3, 2, 3]);
    small.extend(0..18u8);
    put(dir, "small-images-idx3-ubyte", &small)?;
    let mut labels = header(0x0801, &[5]);
    labels.extend([0, 9, 3, 3, 7]);
    put(dir, "train-labels-idx1-ubyte", &labels)?;
    put(dir, "train-labels-idx1-ubyte.gz", &gzip(&labels)?)?;
    put(dir, "empty-labels-idx1-ubyte", &header(0x0801, &[0]))
}

fn cifar(dir: &Path) -> std::io::Result<()> {
    let mut batch = Vec::new();
    for label in [3u8, 8] {
        batch.push(label);
        batch.extend((0..3072).map(|i| ((i * 7 + usize::from(label)) % 256) as u8));
    }
    put(dir, "data_batch_2_records.bin", &batch)?;
    put(dir, "one_record.bin", &batch[..3073])
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> image::ImageResult<Vec<u8>> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format)?;
    Ok(bytes.into_inner())
}

fn images(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(32, 32, |x, y| {
        Rgb([(x * 8) as u8, (y * 8) as u8, ((x + y) * 4) as u8])
    }));
    let grey = DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, y| {
        [((x * y) % 256) as u8].into()
    }));
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_fn(5, 7, |x, y| {
        Rgba([x as u8 * 50, y as u8 * 30, 200, 128])
    }));
    let wide16 = DynamicImage::ImageRgb16(image::ImageBuffer::from_fn(9, 3, |x, y| {
        Rgb([(x * 7000) as u16, (y * 20000) as u16, 65535])
    }));
    put(dir, "rgb_32x32.png", &encoded(&rgb, ImageFormat::Png)?)?;
    put(dir, "grey_28x28.png", &encoded(&grey, ImageFormat::Png)?)?;
    put(dir, "rgba_5x7.png", &encoded(&rgba, ImageFormat::Png)?)?;
    put(dir, "rgb16_9x3.png", &encoded(&wide16, ImageFormat::Png)?)?;
    put(dir, "rgb_32x32.jpg", &encoded(&rgb, ImageFormat::Jpeg)?)?;
    put(dir, "grey_28x28.jpg", &encoded(&grey, ImageFormat::Jpeg)?)?;
    Ok(())
}

/// Small specs exported to ONNX with seeded weights: every kind `cnnc import` reads, in a few
/// hundred bytes each, and a graph with add and concat.
fn onnx(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    const SPECS: &[(&str, &str)] = &[
        (
            "conv_bn_pool",
            "input (1, 6, 6)\nc: conv2d(out_channels=2, kernel_size=3, padding=1, bias=false)\n\
             bn: batchnorm2d\nrelu\nmaxpool2d(kernel_size=2, ceil_mode=true)\nflatten\n\
             fc: linear(out_features=3)\n",
        ),
        (
            "activations",
            "input (2, 4, 4)\nct: conv_transpose2d(out_channels=2, kernel_size=2, stride=2)\n\
             p: prelu(num_parameters=2)\nhardswish\nupsample(scale_factor=2)\n\
             avgpool2d(kernel_size=4)\nrelu6\nsigmoid\nadaptive_avg_pool2d(output_size=1)\n\
             flatten\nsoftmax\n",
        ),
    ];
    for (name, text) in SPECS {
        let source = cnnc_spec::Source::new(
            format!("{name}.cnn"),
            text.to_string(),
            cnnc_spec::Format::Dsl,
        );
        let (model, _) = cnnc_spec::compile(&source).map_err(|_| format!("{name} checks"))?;
        put(dir, &format!("{name}.onnx"), &exported(&model)?)?;
    }
    use cnnc_spec::core::config::{ConcatConfig, LayerConfig, LayerDef, NetworkDef, Source};
    let layer = |name: &str, config, inputs| LayerDef {
        name: name.to_owned(),
        config,
        inputs,
    };
    let graph = NetworkDef {
        input: [1, 2, 2],
        layers: vec![
            layer("a", LayerConfig::Relu, vec![]),
            layer("b", LayerConfig::Add, vec![Source::Layer(0), Source::Input]),
            layer(
                "c",
                LayerConfig::Concat(ConcatConfig { dim: 1 }),
                vec![Source::Layer(1), Source::Input],
            ),
            layer(
                "d",
                LayerConfig::Mul,
                vec![Source::Layer(2), Source::Layer(2)],
            ),
            layer("e", LayerConfig::FLATTEN, vec![]),
        ],
    };
    let model = cnnc_spec::core::Model::new(Some("Graph".into()), graph)?;
    put(dir, "graph.onnx", &exported(&model)?)?;
    Ok(())
}

fn exported(model: &cnnc_spec::core::Model) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let weights: BTreeMap<String, Vec<f32>> = model
        .tensors()
        .map(|t| {
            let values = (0..t.numel()).map(|i| (i % 5) as f32 / 4.0 + 0.5).collect();
            (t.name.clone(), values)
        })
        .collect();
    let options = cnnc_interop::export::ExportOptions::default();
    Ok(cnnc_interop::export::export(model, &weights, &options)?)
}

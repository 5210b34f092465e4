//! `cnnc predict`: the top-k classes, with probabilities, of PNG/JPEG images. Each image is
//! converted and resized to what the network was trained on (the dataset's image shape, recorded
//! in the weights' metadata), then prepared exactly as in training (normalisation, bridging).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use cnnc::data::folder::{decode_image, image_to_chw};
use cnnc::data::{
    CIFAR10_CLASSES, DatasetKind, FASHION_MNIST_CLASSES, ImageShape, MNIST_CLASSES, Normalization,
};
use cnnc::predict::{softmax, top_k};
use cnnc::runtime::Mode;
use ndarray::ArrayView4;
use serde::Serialize;

use super::OutputFormat;
use super::dataset::{self, DatasetName};
use super::job::{self, refuse};
use super::model::{Spec, load_weights};
use super::table::{self, Align};
use super::terminal::printable;

/// Arguments of `cnnc predict`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The spec (.yaml/.yml/.cnn).
    #[arg(value_name = "SPEC")]
    pub spec: PathBuf,
    /// Weights (safetensors, PyTorch state_dict names).
    #[arg(long, value_name = "W.safetensors")]
    pub weights: PathBuf,
    /// PNG or JPEG images to classify.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// Prepare images as for this dataset (class names, image shape, normalisation) [default:
    /// what the weights' metadata records; without it, the model input scaled to [0, 1]].
    #[arg(long, value_enum)]
    pub dataset: Option<DatasetName>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
    pub format: OutputFormat,
}

/// How images are prepared and how outputs are named.
struct Preparation {
    /// Class name of each output.
    classes: Vec<String>,
    /// The image shape the network was trained on, before bridging.
    image_shape: ImageShape,
    normalization: Normalization,
}

/// Runs `cnnc predict`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    job::finish(execute(args))
}

fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    if args.top_k == 0 {
        anyhow::bail!("--top-k must be at least 1");
    }
    let spec = Spec::load(&args.spec)?;
    let mut net = spec.network(0)?;
    let meta = load_weights(&mut net, &args.weights, &spec)?;
    let prep = match args.dataset.map(DatasetKind::from) {
        Some(kind) => known_dataset(kind)?,
        None => Preparation {
            classes: meta.classes.clone().unwrap_or_default(),
            image_shape: meta.image_shape.unwrap_or(spec.input()),
            normalization: meta.normalization.clone().unwrap_or_else(|| {
                eprintln!(
                    "notice: {} records no normalisation; images are only scaled to [0, 1] \
                     (pass --dataset to prepare them as for a known dataset)",
                    args.weights.display()
                );
                let channels = meta.image_shape.unwrap_or(spec.input()).channels;
                Normalization::new(vec![0.0; channels], vec![1.0; channels])
            }),
        },
    };
    let classes = dataset::output_names(&prep.classes, net.classes());
    let transform = dataset::transform(prep.image_shape, &prep.normalization, spec.input())?;
    let image_len = transform.output_shape().len();
    let mut batch = vec![0f32; args.images.len() * image_len];
    for (path, out) in args.images.iter().zip(batch.chunks_exact_mut(image_len)) {
        let pixels = read_image(path, prep.image_shape)?;
        transform.apply(&pixels, out)?;
    }
    let [c, h, w] = spec.def.input;
    let x = ArrayView4::from_shape((args.images.len(), c, h, w), &batch).context("image batch")?;
    let logits = net.forward_view(x, Mode::Eval)?;
    let results: Vec<ImageJson> = args
        .images
        .iter()
        .zip(logits.outer_iter())
        .map(|(path, row)| ImageJson {
            image: path.display().to_string(),
            top: top_k(&softmax(&row.to_vec()), args.top_k)
                .into_iter()
                .map(|(index, probability)| ClassJson {
                    class: classes[index].clone(),
                    index,
                    probability,
                })
                .collect(),
        })
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match args.format {
        OutputFormat::Human => {
            for result in &results {
                writeln!(out, "{}", printable(&result.image))?;
                // Class names come from the weights' metadata: shown, never obeyed.
                let classes: Vec<String> = result.top.iter().map(|t| printable(&t.class)).collect();
                let width = table::widest(&classes);
                for (rank, (t, class)) in result.top.iter().zip(&classes).enumerate() {
                    writeln!(
                        out,
                        "  {}. {}  {:>6.2}%",
                        rank + 1,
                        table::pad(class, width, Align::Left),
                        100.0 * t.probability
                    )?;
                }
            }
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut out, &results)?;
            writeln!(out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Class names, image shape and normalisation of a dataset whose images have a fixed shape.
fn known_dataset(kind: DatasetKind) -> anyhow::Result<Preparation> {
    let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect();
    Ok(match kind {
        DatasetKind::Cifar10 => Preparation {
            classes: names(&CIFAR10_CLASSES),
            image_shape: ImageShape::new(3, 32, 32),
            normalization: Normalization::cifar10(),
        },
        DatasetKind::FashionMnist | DatasetKind::Sample => Preparation {
            classes: names(&FASHION_MNIST_CLASSES),
            image_shape: ImageShape::new(1, 28, 28),
            normalization: Normalization::fashion_mnist(),
        },
        DatasetKind::Mnist => Preparation {
            classes: names(&MNIST_CLASSES),
            image_shape: ImageShape::new(1, 28, 28),
            normalization: Normalization::mnist(),
        },
        DatasetKind::Folder => anyhow::bail!(
            "--dataset folder has no fixed classes or image size; use weights trained by \
             `cnnc train`, which record them"
        ),
    })
}

/// Decodes an image into `[C, H, W]` u8 pixels of `shape`, converting colour and resizing
/// (bilinear) with a notice when it differs.
fn read_image(path: &Path, shape: ImageShape) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        anyhow::bail!(
            "{} is a directory; pass PNG or JPEG files (e.g. {}/*.png)",
            path.display(),
            path.display()
        );
    }
    let image = decode_image(std::io::BufReader::new(file), path)?;
    let (w, h) = (shape.width as u32, shape.height as u32);
    let grey = image.color().channel_count() <= 2;
    let mut changes = Vec::new();
    if (image.width(), image.height()) != (w, h) {
        changes.push(format!(
            "resized from {}x{} to {w}x{h}",
            image.width(),
            image.height()
        ));
    }
    match (grey, shape.channels) {
        (false, 1) => changes.push("converted to grey".to_owned()),
        (true, 3) => changes.push("converted to RGB".to_owned()),
        _ => {}
    }
    if !changes.is_empty() {
        eprintln!("notice: {}: {}", path.display(), changes.join(", "));
    }
    if !matches!(shape.channels, 1 | 3) {
        return Err(refuse(format!(
            "the model reads {}-channel images; predict handles grey (1) and RGB (3)",
            shape.channels
        )));
    }
    Ok(image_to_chw(&image, shape)?)
}

#[derive(Serialize)]
struct ImageJson {
    image: String,
    top: Vec<ClassJson>,
}

#[derive(Serialize)]
struct ClassJson {
    class: String,
    index: usize,
    probability: f64,
}

//! The library writes and resumes the checkpoint folders `cnnc train` does
//! (`cnnc::train::checkpoint`): a run the library trained one epoch of, `cnnc train --resume`
//! continues to the bytes of an uninterrupted two-epoch `cnnc train`, and a run the CLI trained
//! one epoch of, the library continues to the same bytes. Adam (whose per-parameter steps the
//! optimizer state keeps) and a dropout layer (whose random stream the run state keeps) make
//! "the same bytes" a real check of everything a checkpoint carries.

#[path = "support/cli.rs"]
mod cli;

use std::path::Path;

use cli::cnnc;
use cnnc::data::{DatasetKind, ImageShape, Loader, SAMPLE_DIR, Transform, fashion_mnist_sample};
use cnnc::runtime::Network;
use cnnc::runtime::weights;
use cnnc::train::checkpoint::{
    self, CheckpointError, DataInfo, OptimizerName, Recipe, Recovery, RunState, Saver, Schedule,
};
use cnnc::train::{Outcome, Trainer, freeze};

/// A small model over the sample's 28x28 images, with dropout.
const SPEC: &str = "input (1, 28, 28)\nflatten\ndropout(p=0.2)\nlinear(out_features=10)\n";

/// The recipe both sides train with: what `FLAGS` ask `cnnc train` for.
fn recipe() -> Recipe {
    Recipe {
        optimizer: OptimizerName::Adam,
        lr: 2e-3,
        momentum: 0.0,
        weight_decay: 0.0,
        batch_size: 500,
        seed: 3,
        augment: false,
        schedule: Schedule::None,
        accumulate: 1,
        freeze: Vec::new(),
    }
}

const FLAGS: [&str; 8] = [
    "--optimizer",
    "adam",
    "--lr",
    "0.002",
    "--batch-size",
    "500",
    "--seed",
    "3",
];

/// `cnnc train SPEC FLAGS extra`, which must succeed.
fn train_cli(spec: &Path, extra: &[&str]) {
    let spec = spec.to_str().expect("a UTF-8 path");
    let args = [&["train", spec][..], &FLAGS, extra].concat();
    let output = cnnc(&args);
    assert!(
        output.status.success(),
        "cnnc {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Trains the run whose checkpoint `saver` holds (a new run's state, or one read back) to
/// `saver.state.epochs`, through the library alone, resuming from the folder when it holds a
/// checkpoint.
fn train_library(spec: &Path, mut saver: Saver) -> Saver {
    let checked = cnnc::spec::load(spec).expect("the spec checks");
    let splits = fashion_mnist_sample(Path::new(SAMPLE_DIR)).expect("the sample");
    let (train, test) = (&splits.train, &splits.test);
    let [c, h, w] = Network::from_model(&checked, 0)
        .expect("a network")
        .input_shape();
    let input = ImageShape::new(c, h, w);
    let transform =
        Transform::new(train.shape(), train.normalization(), input).expect("a transform");
    let state = &saver.state;
    let mut model = Network::from_model(&checked, state.recipe.seed).expect("a network");
    for pattern in &state.recipe.freeze {
        freeze(&mut model, pattern).expect("the pattern names parameters");
    }
    let mut optimizer = state
        .recipe
        .optimizer_config()
        .build()
        .expect("an optimizer");
    let config = state.recipe.loader_config(train.len());
    let mut loader = Loader::new(train, transform.clone(), config).expect("a loader");
    if state.step > 0 {
        checkpoint::resume(
            &saver.dir,
            state,
            &mut model,
            optimizer.as_mut(),
            &mut loader,
        )
        .expect("the checkpoint resumes");
    }
    let validation = Some((test, transform));
    let mut trainer = Trainer::new(model, optimizer, loader, validation, state.train_config());
    trainer.state = state.train_state();
    assert_eq!(
        trainer.run(&mut saver).expect("it trains"),
        Outcome::Finished
    );
    saver
}

/// A new run's state for `spec`, as `cnnc train` would start it.
fn new_run(spec: &Path, epochs: usize) -> RunState {
    let checked = cnnc::spec::load(spec).expect("the spec checks");
    let splits = fashion_mnist_sample(Path::new(SAMPLE_DIR)).expect("the sample");
    let train = &splits.train;
    let [c, h, w] = Network::from_model(&checked, 0)
        .expect("a network")
        .input_shape();
    let input = ImageShape::new(c, h, w);
    let transform =
        Transform::new(train.shape(), train.normalization(), input).expect("a transform");
    let recipe = recipe();
    let loader =
        Loader::new(train, transform.clone(), recipe.loader_config(train.len())).expect("a loader");
    let data = DataInfo::new(
        DatasetKind::Sample,
        Path::new(SAMPLE_DIR),
        &splits,
        &transform,
    );
    let hash = checkpoint::spec_hash(&checked);
    RunState::new(spec, &hash, epochs, recipe, data, loader.state())
}

fn bytes(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).expect("a checkpoint file")
}

/// The history without the times, which differ from run to run.
fn history(state: &RunState) -> Vec<(usize, u64, f64, f64, f64, f64)> {
    let row = |r: &cnnc::train::EpochRecord| {
        let accuracies = (r.train_accuracy, r.val_accuracy);
        (
            r.epoch,
            r.step,
            r.train_loss,
            accuracies.0,
            r.val_loss,
            accuracies.1,
        )
    };
    state.history.iter().map(row).collect()
}

#[test]
fn library_and_cli_continue_each_others_checkpoints() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let spec = dir.path().join("small.cnn");
    std::fs::write(&spec, SPEC).expect("spec written");
    let out = |name: &str| dir.path().join(name);
    let arg = |path: &Path| path.to_str().expect("a UTF-8 path").to_owned();

    // The reference: two epochs in one `cnnc train`.
    let straight = out("straight");
    train_cli(&spec, &["--epochs", "2", "--out", &arg(&straight)]);
    let reference = checkpoint::read_state(&straight).expect("a checkpoint").0;

    // The library trains epoch 1 into a folder, `cnnc train --resume` trains epoch 2.
    let library_first = out("library-first");
    let saver = Saver::new(&library_first, new_run(&spec, 1)).expect("the folder");
    assert_eq!(saver.recovery, Recovery::Clean);
    drop(train_library(&spec, saver));
    train_cli(&spec, &["--resume", &arg(&library_first), "--epochs", "2"]);

    // `cnnc train` trains epoch 1, the library continues it.
    let cli_first = out("cli-first");
    train_cli(&spec, &["--epochs", "1", "--out", &arg(&cli_first)]);
    let mut saver = Saver::open(&cli_first).expect("the CLI's checkpoint");
    assert_eq!(saver.state.epochs_done, 1);
    saver.state.epochs = 2;
    let saver = train_library(&spec, saver);
    drop(saver);

    for folder in [&library_first, &cli_first] {
        for file in [checkpoint::MODEL_FILE, checkpoint::OPTIMIZER_FILE] {
            assert!(
                bytes(folder, file) == bytes(&straight, file),
                "{}: {file} differs from the uninterrupted run's",
                folder.display()
            );
        }
        let state = checkpoint::read_state(folder).expect("a checkpoint").0;
        assert_eq!(history(&state), history(&reference), "{}", folder.display());
        assert_eq!(state.rng_states, reference.rng_states);
        assert!(!state.rng_states.is_empty(), "the dropout stream is kept");
        // `metrics.csv` as `cnnc train` writes it, by whichever side trained the last epoch.
        let csv = std::fs::read_to_string(folder.join(checkpoint::METRICS_FILE)).expect("metrics");
        let columns = |text: &str| -> Vec<String> {
            // Every column but the time.
            let cut = |line: &str| {
                line.rsplit_once(',')
                    .map_or("", |(rest, _)| rest)
                    .to_owned()
            };
            text.lines().map(cut).collect()
        };
        let straight_csv = std::fs::read_to_string(straight.join(checkpoint::METRICS_FILE));
        assert_eq!(columns(&csv), columns(&straight_csv.expect("metrics")));
        assert_eq!(csv.lines().count(), 3, "{csv}");
    }
}

#[test]
fn a_folder_in_use_or_damaged_is_refused_in_the_librarys_terms() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let spec = dir.path().join("small.cnn");
    std::fs::write(&spec, SPEC).expect("spec written");
    let run = dir.path().join("run");
    let saver = Saver::new(&run, new_run(&spec, 1)).expect("the folder");
    let held = Saver::new(&run, new_run(&spec, 1)).expect_err("held by the first");
    assert!(matches!(held, CheckpointError::InUse { .. }), "{held}");
    drop(train_library(&spec, saver));

    // A run state edited by hand is refused, naming the file and the field.
    let path = run.join(checkpoint::STATE_FILE);
    let text = std::fs::read_to_string(&path).expect("the run state");
    std::fs::write(
        &path,
        text.replace("\"epochs_done\": 1", "\"epochs_done\": 2"),
    )
    .expect("edited");
    let err = Saver::open(&run).expect_err("an edited state");
    assert!(matches!(err, CheckpointError::Invalid(_)), "{err}");
    assert!(
        err.to_string()
            .contains("`history` holds 1 epochs, but `epochs_done` is 2"),
        "{err}"
    );
    let missing = Saver::open(&dir.path().join("nothing")).expect_err("no folder");
    assert!(matches!(missing, CheckpointError::Io { .. }), "{missing}");
}

/// Adam's per-parameter steps as `optimizer.state` in `dir` records them.
fn param_steps(dir: &Path) -> Vec<(String, u64)> {
    let file = weights::read_tensors(&dir.join(checkpoint::OPTIMIZER_FILE)).expect("the state");
    let text = file
        .metadata
        .get("param_steps")
        .expect("per-parameter steps");
    serde_json::from_str(text).expect("[name, step] pairs")
}

#[test]
fn adams_per_parameter_steps_survive_a_checkpoint_and_old_ones_read_the_global_step() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let spec = dir.path().join("small.cnn");
    std::fs::write(&spec, SPEC).expect("spec written");
    let run = dir.path().join("run");

    // One epoch with the linear layer's bias frozen: its step stays 0.
    let mut state = new_run(&spec, 1);
    state.recipe.freeze = vec!["2.bias".to_owned()];
    let steps = drop_saver(train_library(
        &spec,
        Saver::new(&run, state).expect("folder"),
    ));
    assert_eq!(
        param_steps(&run),
        [("2.weight".into(), steps), ("2.bias".into(), 0)]
    );

    // Kept aside as a checkpoint written before per-parameter steps: the same files, without.
    let old = dir.path().join("old");
    std::fs::create_dir(&old).expect("a folder");
    for file in [checkpoint::MODEL_FILE, checkpoint::STATE_FILE] {
        std::fs::copy(run.join(file), old.join(file)).expect("copied");
    }
    let mut file = weights::read_tensors(&run.join(checkpoint::OPTIMIZER_FILE)).expect("state");
    file.metadata.remove("param_steps");
    let tensors: Vec<_> = file.tensors.into_iter().collect();
    weights::write_tensors(
        &old.join(checkpoint::OPTIMIZER_FILE),
        &tensors,
        &file.metadata,
    )
    .expect("written");

    // Unfrozen for a second epoch: the bias counts its own steps from 1, as PyTorch's does.
    let mut saver = Saver::open(&run).expect("the checkpoint");
    saver.state.epochs = 2;
    saver.state.recipe.freeze.clear();
    drop(train_library(&spec, saver));
    assert_eq!(
        param_steps(&run),
        [("2.weight".into(), 2 * steps), ("2.bias".into(), steps)]
    );

    // The old checkpoint restores with every parameter at the optimizer's step.
    let (state, _) = checkpoint::read_state(&old).expect("the old checkpoint");
    let checked = cnnc::spec::load(&spec).expect("the spec checks");
    let mut model = Network::from_model(&checked, 0).expect("a network");
    let mut optimizer = state
        .recipe
        .optimizer_config()
        .build()
        .expect("an optimizer");
    checkpoint::restore(&old, &state, &mut model, optimizer.as_mut()).expect("it restores");
    let restored = optimizer.export_state().param_steps;
    assert_eq!(
        restored,
        [("2.weight".into(), steps), ("2.bias".into(), steps)]
    );
}

/// The optimizer steps of the run `saver` saved, once it has let the folder go.
fn drop_saver(saver: Saver) -> u64 {
    saver.state.step
}

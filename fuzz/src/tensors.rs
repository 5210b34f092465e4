//! Weights files: any bytes read as named tensors, and load strictly into the seed model
//! (PyTorch's CustomCNN from `models/custom_cnn.yaml`, built once per process). A file that reads
//! writes and reads back to the same tensors; one that loads saves and loads back bit for bit; a
//! failed load leaves the model as it was.

use std::path::Path;
use std::sync::{LazyLock, Mutex, PoisonError};

use cnnc_runtime::weights::{self, TensorData, TensorFile};
use cnnc_runtime::{Entry, Network, Visit};
use cnnc_spec::{Format, Source};

const SEED_SPEC: &str = include_str!("../../models/custom_cnn.yaml");

static SEED: LazyLock<Mutex<Network>> = LazyLock::new(|| {
    let source = Source::new("models/custom_cnn.yaml", SEED_SPEC, Format::Yaml);
    let (model, _) = cnnc_spec::compile(&source).expect("the seed spec is valid");
    Mutex::new(Network::from_model(&model, 0).expect("the seed network builds"))
});

/// Bytes as a safetensors file: read as plain tensors, then loaded into the seed model.
pub fn safetensors(data: &[u8]) {
    let path = Path::new("fuzz.safetensors");
    let file = weights::parse_tensors(data, path);
    match &file {
        Ok(file) => {
            let bytes = weights::serialize(&entries(file), &file.metadata);
            let again = weights::parse_tensors(&bytes, path).expect("written tensors read back");
            assert!(
                same_file(&again, file),
                "tensors changed when written and read back"
            );
        }
        Err(error) => assert!(!error.problems.is_empty(), "an error without a problem"),
    }

    // A panic in an earlier input cannot leave the network half-loaded: loading stages first.
    let mut net = SEED.lock().unwrap_or_else(PoisonError::into_inner);
    let before = file.is_ok().then(|| fingerprint(&mut net));
    match weights::load_bytes(&mut *net, data, path) {
        Ok(metadata) => {
            let file = file.expect("a file that loads reads as tensors");
            assert_eq!(
                metadata, file.metadata,
                "load and read disagree on the metadata"
            );
            let state = weights::state_dict(&mut *net);
            assert_eq!(
                state.len(),
                file.tensors.len(),
                "the model holds other tensors"
            );
            for (name, tensor) in &state {
                let stored = file.tensors.get(name);
                assert!(
                    stored.is_some_and(|stored| same(stored, tensor)),
                    "`{name}` differs from the file after loading"
                );
            }
            let saved = weights::serialize(&state, &metadata);
            weights::load_bytes(&mut *net, &saved, path).expect("saved weights load back");
            let reloaded = weights::state_dict(&mut *net);
            assert!(
                state
                    .iter()
                    .zip(&reloaded)
                    .all(|((a, x), (b, y))| a == b && same(x, y)),
                "weights changed when saved and loaded back"
            );
        }
        Err(error) => {
            assert!(!error.problems.is_empty(), "an error without a problem");
            if let Some(before) = before {
                assert_eq!(
                    fingerprint(&mut net),
                    before,
                    "a failed load modified the model: {error}"
                );
            }
        }
    }
}

fn entries(file: &TensorFile) -> Vec<(String, TensorData)> {
    file.tensors
        .iter()
        .map(|(name, tensor)| (name.clone(), tensor.clone()))
        .collect()
}

fn same_file(a: &TensorFile, b: &TensorFile) -> bool {
    a.metadata == b.metadata
        && a.tensors.len() == b.tensors.len()
        && a.tensors
            .iter()
            .zip(&b.tensors)
            .all(|((m, x), (n, y))| m == n && same(x, y))
}

/// Equal shapes and bit-identical values (NaN payloads included, which `==` would not allow).
fn same(a: &TensorData, b: &TensorData) -> bool {
    match (a, b) {
        (TensorData::F32(a), TensorData::F32(b)) => {
            a.shape() == b.shape() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        }
        (TensorData::F64(a), TensorData::F64(b)) => {
            a.shape() == b.shape() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
        }
        (TensorData::I64(a), TensorData::I64(b)) => a == b,
        _ => false,
    }
}

/// A hash of every value the model holds, cheaper than a copy of its state (FNV-1a over the
/// names and the values' bits: this only has to notice a change, not resist an attacker).
fn fingerprint(net: &mut Network) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut mix = |word: u64| hash = (hash ^ word).wrapping_mul(PRIME);
    net.visit(&mut |entry| {
        let name = match entry {
            Entry::Param { name, param } => {
                param.value.iter().for_each(|v| mix(u64::from(v.to_bits())));
                name
            }
            Entry::Buffer { name, value } => {
                value.iter().for_each(|v| mix(u64::from(v.to_bits())));
                name
            }
            Entry::Counter { name, value } => {
                mix(*value as u64);
                name
            }
        };
        name.bytes().for_each(|b| mix(u64::from(b)));
    });
    hash
}

//! ONNX models: any bytes through `cnnc import`'s reader. A model that imports is a checked
//! model whose every tensor has its weights at the right shape and size, and a sequential one's
//! YAML spec checks back to the same layers.

use cnnc_core::TensorRole;
use cnnc_spec::{Format, Source};

/// Bytes as an ONNX file, imported.
pub fn onnx(data: &[u8]) {
    let Ok(imported) = cnnc_interop::import::import(data, "Fuzz") else {
        return;
    };
    for info in imported.model.tensors() {
        if info.role == TensorRole::NumBatchesTracked {
            continue;
        }
        let found = imported
            .weights
            .iter()
            .find(|(name, _, _)| *name == info.name);
        let (_, dims, values) = found.expect("every tensor of the model has weights");
        assert_eq!(*dims, info.shape, "{}", info.name);
        assert_eq!(values.len(), info.numel(), "{}", info.name);
    }
    if imported.model.is_sequential() {
        let source = Source::new("fuzz.yaml", imported.yaml.clone(), Format::Yaml);
        let (model, _) = cnnc_spec::compile(&source).expect("an imported spec checks");
        assert_eq!(
            model.layers(),
            imported.model.layers(),
            "the spec says what was imported"
        );
    }
}

// Every model in `models/` expands and runs, from both languages, plus an inline spec and a
// model generated through a re-exported facade.
use cnnc::ndarray::Array4;

cnnc::cnn_model!(pub CustomCnnYaml, "models/custom_cnn.yaml");
cnnc::cnn_model!(pub CustomCnnDsl, "models/custom_cnn.cnn");
cnnc::cnn_model!(LeNet5Yaml, "models/lenet5.yaml");
cnnc::cnn_model!(LeNet5Dsl, "models/lenet5.cnn");
cnnc::cnn_model!(StridedYaml, "models/strided.yaml");
cnnc::cnn_model!(StridedDsl, "models/strided.cnn");
cnnc::cnn_model!(ActivationsYaml, "models/activations.yaml");
cnnc::cnn_model!(ActivationsDsl, "models/activations.cnn");
cnnc::cnn_model!(VggSmallYaml, "models/vgg_small.yaml",);
cnnc::cnn_model!(VggSmallDsl, "models/vgg_small.cnn");
cnnc::cnn_model!(ModernActivationsYaml, "models/modern_activations.yaml");
cnnc::cnn_model!(ModernActivationsDsl, "models/modern_activations.cnn");

mod engine {
    pub use cnnc as reexported;
}

cnnc::cnn_model! {
    /// A tiny inline model.
    #[cnnc(crate = crate::engine::reexported)]
    pub(crate) Tiny;
    input (1, 8, 8)
    conv2d(out_channels=2, kernel_size=3)  // -> 2x6x6
    relu
    flatten
    head: linear(out_features=3)
}

macro_rules! run {
    ($($model:ident),*) => {$({
        let [c, h, w] = $model::INPUT_SHAPE;
        let logits = $model::new(1).predict(Array4::zeros((1, c, h, w)).view()).unwrap();
        assert_eq!(logits.dim(), (1, $model::OUTPUT_SIZE));
    })*};
}

fn main() {
    run!(CustomCnnYaml, CustomCnnDsl, LeNet5Yaml, LeNet5Dsl, StridedYaml, StridedDsl);
    run!(ActivationsYaml, ActivationsDsl, VggSmallYaml, VggSmallDsl, Tiny);
    run!(ModernActivationsYaml, ModernActivationsDsl);
    assert_eq!(Tiny::PARAM_COUNT, 2 * 9 + 2 + 72 * 3 + 3);
}

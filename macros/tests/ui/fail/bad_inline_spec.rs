// An inline spec whose error points at the offending token inside the macro call.
cnnc::cnn_model! {
    pub Tiny;
    input (1, 28, 28)
    conv2d(out_channels=4, kernel_size=3, paddin=1)
    flatten
    linear(out_features=10)
}

fn main() {}

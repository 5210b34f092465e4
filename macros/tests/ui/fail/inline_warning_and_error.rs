// An inline spec with a warning and an error: both are reported, each at its own token, the
// warning as a warning.
cnnc::cnn_model! {
    pub Tiny;
    input (1, 8, 8)
    conv2d(out_channels=4, kernel_size=3)
    batchnorm2d
    flatten
    linear(out_features=2, biass=false)
}

fn main() {}

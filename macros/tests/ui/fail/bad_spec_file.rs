// A spec file with two errors: one compile error each, with the text `cnnc check` prints, at the
// path literal.
cnnc::cnn_model!(pub Bad, "macros/tests/ui/bad_spec.yaml");

fn main() {}

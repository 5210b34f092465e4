// A spec path that does not exist is a compile error at the path literal.
cnnc::cnn_model!(Missing, "models/no_such_model.yaml");

fn main() {}

// A spec warning reaches `cargo build` as a warning carrying the text `cnnc check` prints, at the
// path literal; a crate that denies warnings refuses it.
#![deny(warnings)]

cnnc::cnn_model!(pub Warned, "macros/tests/ui/warned.yaml");

fn main() {
    let _ = Warned::new(0);
}

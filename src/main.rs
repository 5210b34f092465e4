//! The `cnnc` command-line tool.

fn main() {}

//! Writes the prost types of `onnx.proto3` (argument 1) as one Rust file (argument 2).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, proto, out] = args.as_slice() else {
        return Err("usage: onnx-protogen ONNX.proto3 OUT.rs".into());
    };
    let dir = std::env::temp_dir().join(format!("onnx-protogen-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let include = std::path::Path::new(proto)
        .parent()
        .ok_or("the proto file has no directory")?;
    prost_build::Config::new()
        .out_dir(&dir)
        .compile_protos(&[proto.as_str()], &[include])?;
    std::fs::copy(dir.join("onnx.rs"), out)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

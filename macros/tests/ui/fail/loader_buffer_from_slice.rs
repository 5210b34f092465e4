// The data loader writes [N, C, H, W]; the typed images' constructors over raw memory name the
// layout they read, so the old `from_slice` (which read the runtime's pixel-major layout and
// silently scrambled loader batches) no longer exists.
use cnnc::runtime::typed::Images;

fn main() {
    let loader_buffer = vec![0f32; 2 * 3 * 32 * 32];
    let _ = Images::<3, 32, 32>::from_slice(&loader_buffer, 2);
}

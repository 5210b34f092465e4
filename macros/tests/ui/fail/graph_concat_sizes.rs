// A `concat` of maps of different heights and widths does not compile: its inputs share one
// array type that fixes H x W and leaves only the channels free (this is the call `cnn_model!`
// writes for `concat(a, b)`, with `b` of the wrong size).
use cnnc::runtime::config::ConcatConfig;
use cnnc::runtime::layers::Concat;
use cnnc::runtime::typed::{Images, concat};
use cnnc::runtime::Shape;

fn main() -> Result<(), cnnc::Error> {
    let inputs = [Shape::Chw([8, 4, 4]), Shape::Chw([4, 4, 4])];
    let mut cat = Concat::new("cat", &ConcatConfig { dim: 1 }, &inputs)?;
    let (a, b, mut y) = (vec![0.0; 128], vec![0.0; 16], vec![0.0; 192]);
    let a = Images::<8, 4, 4, &[f32]>::view_nhwc(&a, 1)?;
    let b = Images::<4, 2, 2, &[f32]>::view_nhwc(&b, 1)?;
    let _y: Images<12, 4, 4, &[f32]> =
        concat(&mut cat, [a.any_channels(), b.any_channels()], &mut y)?;
    Ok(())
}

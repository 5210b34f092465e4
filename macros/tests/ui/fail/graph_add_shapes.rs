// An `add` of two different shapes does not compile. Generated graph code hands a merge its
// inputs as one array, and each tensor's type carries its shape, so the types must agree (this
// is the call `cnn_model!` writes for `add(a, b)`, with `b` of the wrong shape).
use cnnc::runtime::Shape;
use cnnc::runtime::layers::Add;
use cnnc::runtime::typed::{Images, add};

fn main() -> Result<(), cnnc::Error> {
    let mut sum = Add::new("sum", &[Shape::Chw([8, 4, 4]), Shape::Chw([8, 4, 4])])?;
    let (a, b, mut y) = (vec![0.0; 128], vec![0.0; 64], vec![0.0; 128]);
    let a = Images::<8, 4, 4, &[f32]>::view_nhwc(&a, 1)?;
    let b = Images::<4, 4, 4, &[f32]>::view_nhwc(&b, 1)?;
    let _y: Images<8, 4, 4, &[f32]> = add(&mut sum, [a, b], &mut y)?;
    Ok(())
}

//! PyTorch-matching default initialisation from an explicitly seeded ChaCha stream, so the same
//! seed always gives the same model (in the executor and in generated code alike).

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};

/// The random stream parameters are drawn from: ChaCha8, stream 0 of the model seed. Layers draw
/// in network order (weight, then bias), so a model is a pure function of its seed.
pub fn init_rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The random stream of the dropout layer at position `layer_index` of the network: the model
/// seed's ChaCha8 stream `layer_index + 1`, independent of the init stream and of other layers.
pub fn dropout_rng(seed: u64, layer_index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(layer_index as u64 + 1);
    rng
}

/// A uniform draw in `[0, 1)` with 24 random bits (every value exactly representable in f32).
pub fn unit_f32(rng: &mut ChaCha8Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// The bound PyTorch's default init uses for conv/linear weights and biases: `1 / sqrt(fan_in)`
/// (`kaiming_uniform_(a = sqrt(5))` reduces to this), or 0 when `fan_in` is 0.
pub fn fan_in_bound(fan_in: usize) -> f32 {
    if fan_in == 0 {
        0.0
    } else {
        1.0 / (fan_in as f32).sqrt()
    }
}

/// Fills `values` with draws from `U(-bound, bound)`, as `torch.nn.init.uniform_(t, -bound, bound)`.
pub fn fill_uniform<'a>(
    values: impl IntoIterator<Item = &'a mut f32>,
    bound: f32,
    rng: &mut ChaCha8Rng,
) {
    for v in values {
        *v = (2.0 * unit_f32(rng) - 1.0) * bound;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_bounded_uniform() {
        let mut a = vec![0.0; 10_000];
        let mut b = vec![0.0; 10_000];
        fill_uniform(a.iter_mut(), 0.2, &mut init_rng(7));
        fill_uniform(b.iter_mut(), 0.2, &mut init_rng(7));
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-0.2..0.2).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / a.len() as f32;
        // U(-b, b) has mean 0 and variance b^2 / 3.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 0.04 / 3.0).abs() < 0.001, "var {var}");
        fill_uniform(b.iter_mut(), 0.2, &mut init_rng(8));
        assert_ne!(a, b);
    }

    #[test]
    fn dropout_streams_differ_per_layer() {
        let draw = |i| {
            let mut rng = dropout_rng(1, i);
            (0..4).map(|_| rng.next_u32()).collect::<Vec<_>>()
        };
        assert_ne!(draw(0), draw(1));
        assert_eq!(fan_in_bound(4), 0.5);
    }
}

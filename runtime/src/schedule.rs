//! Learning-rate schedules, per epoch, in the closed forms of `torch.optim.lr_scheduler`.

use std::f64::consts::PI;
use std::num::NonZeroUsize;

/// How the learning rate changes from epoch to epoch.
///
/// ```
/// use std::num::NonZeroUsize;
/// use cnnc_runtime::schedule::LrSchedule;
///
/// let step = LrSchedule::Step { step_size: NonZeroUsize::new(2).unwrap(), gamma: 0.1 };
/// let lrs: Vec<f64> = (0..5).map(|epoch| step.lr(1.0, epoch)).collect();
/// assert_eq!(lrs.len(), 5);
/// assert_eq!(lrs[..2], [1.0, 1.0]);
/// assert!((lrs[2] - 0.1).abs() < 1e-12 && (lrs[4] - 0.01).abs() < 1e-12);
/// // Between epochs: `optimizer.set_lr(schedule.lr(base_lr, epoch))`.
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// The base learning rate throughout.
    Constant,
    /// `torch.optim.lr_scheduler.StepLR(step_size, gamma)`: multiply by `gamma` every
    /// `step_size` epochs.
    Step {
        /// Epochs between decays.
        step_size: NonZeroUsize,
        /// Multiplicative decay factor.
        gamma: f64,
    },
    /// `torch.optim.lr_scheduler.CosineAnnealingLR(T_max, eta_min)`: half a cosine from the base
    /// rate down to `eta_min` over `t_max` epochs (and back up after, as PyTorch does).
    Cosine {
        /// Epochs from the base rate to `eta_min` (PyTorch's `T_max`).
        t_max: NonZeroUsize,
        /// The minimum learning rate.
        eta_min: f64,
    },
}

impl LrSchedule {
    /// The learning rate for `epoch` (0-based) when the optimizer starts at `base_lr`: what
    /// `scheduler.get_last_lr()` reports after `epoch` calls of `scheduler.step()`.
    pub fn lr(&self, base_lr: f64, epoch: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base_lr,
            LrSchedule::Step { step_size, gamma } => {
                let decays = epoch / step_size.get();
                // Repeated multiplication would drift from PyTorch's `gamma ** n` after many decays.
                base_lr * gamma.powf(decays as f64)
            }
            LrSchedule::Cosine { t_max, eta_min } => {
                let phase = PI * epoch as f64 / t_max.get() as f64;
                eta_min + (base_lr - eta_min) * (1.0 + phase.cos()) / 2.0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("tests use non-zero sizes")
    }

    #[test]
    fn constant_ignores_the_epoch() {
        assert_eq!(LrSchedule::Constant.lr(0.25, 0), 0.25);
        assert_eq!(LrSchedule::Constant.lr(0.25, 1000), 0.25);
    }

    #[test]
    fn step_halves_every_step_size_epochs() {
        let s = LrSchedule::Step {
            step_size: nz(2),
            gamma: 0.5,
        };
        let lrs: Vec<f64> = (0..6).map(|e| s.lr(0.8, e)).collect();
        assert_eq!(lrs, [0.8, 0.8, 0.4, 0.4, 0.2, 0.2]);
    }

    #[test]
    fn cosine_reaches_eta_min_at_t_max_and_half_way_at_the_middle() {
        let s = LrSchedule::Cosine {
            t_max: nz(4),
            eta_min: 0.1,
        };
        assert_eq!(s.lr(1.0, 0), 1.0);
        assert!((s.lr(1.0, 2) - 0.55).abs() < 1e-15);
        assert!((s.lr(1.0, 4) - 0.1).abs() < 1e-15);
        assert!((s.lr(1.0, 8) - 1.0).abs() < 1e-15);
    }
}

//! Which SIMD instructions the kernels use, chosen once at run time: the widest family the CPU
//! has, capped by the `CNNC_SIMD` environment variable ([`SIMD_VAR`]), and [`multiversion!`] for
//! loops the compiler vectorises itself. The library is built for baseline x86-64 (SSE2) so that
//! one binary runs everywhere; code that needs wider vectors asks for them here.
//!
//! `CNNC_SIMD=avx512|avx2|none` is a maximum, as oneDNN's `ONEDNN_MAX_CPU_ISA` is: a machine
//! with AVX-512 runs (and can time) the AVX2 kernels or the portable loops, and a request above
//! what the CPU has runs the CPU's widest ([`Override::capped`]). Results do not depend on the
//! choice: every path computes the same chains in the same order.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that caps the instructions the kernels use.
pub const SIMD_VAR: &str = "CNNC_SIMD";

/// The values [`SIMD_VAR`] accepts, widest first.
pub const SIMD_VALUES: [&str; 3] = ["avx512", "avx2", "none"];

/// An instruction family the kernels can run, widest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// AVX-512F (16 floats per register).
    Avx512,
    /// AVX2 with FMA (8 floats per register).
    Avx2,
    /// Baseline SSE2 only: the portable loops.
    None,
}

impl Simd {
    /// The family as [`SIMD_VAR`] spells it.
    pub fn word(self) -> &'static str {
        match self {
            Simd::Avx512 => "avx512",
            Simd::Avx2 => "avx2",
            Simd::None => "none",
        }
    }

    /// The family as reports name it: `AVX-512`, `AVX2+FMA` or `scalar`.
    pub fn label(self) -> &'static str {
        match self {
            Simd::Avx512 => "AVX-512",
            Simd::Avx2 => "AVX2+FMA",
            Simd::None => "scalar",
        }
    }

    /// Reads a value of [`SIMD_VAR`] (case and surrounding blanks ignored).
    pub fn parse(value: &str) -> Result<Simd, SimdVarError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "avx512" => Ok(Simd::Avx512),
            "avx2" => Ok(Simd::Avx2),
            "none" => Ok(Simd::None),
            _ => Err(SimdVarError {
                value: value.to_owned(),
            }),
        }
    }
}

/// A value of [`SIMD_VAR`] that is none of [`SIMD_VALUES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimdVarError {
    /// The value found.
    pub value: String,
}

impl fmt::Display for SimdVarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SIMD_VAR}={:?} is not an instruction family: set it to one of {} (a maximum: \
             the kernels use the widest the CPU has, at most this), or unset it",
            self.value,
            SIMD_VALUES.join(", ")
        )
    }
}

impl std::error::Error for SimdVarError {}

/// What [`SIMD_VAR`] asked for, and what the kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    /// The widest family the CPU has.
    pub cpu: Simd,
    /// The family the variable asked for, when it is set.
    pub requested: Option<Simd>,
    /// The family the kernels run: the narrower of the two.
    pub chosen: Simd,
}

impl Override {
    /// Resolves the variable's `value` (unset: `None`) on a CPU whose widest family is `cpu`.
    pub fn resolve(cpu: Simd, value: Option<&str>) -> Result<Override, SimdVarError> {
        let requested = value.map(Simd::parse).transpose()?;
        Ok(Override {
            cpu,
            requested,
            chosen: requested.map_or(cpu, |r| r.max(cpu)),
        })
    }

    /// Whether the variable asked for more than the CPU has (the kernels then run the CPU's
    /// widest), as a warning to print.
    pub fn capped(&self) -> Option<String> {
        let requested = self.requested?;
        (requested < self.cpu).then(|| {
            format!(
                "{SIMD_VAR}={} asks for more than this CPU has; the kernels use {}",
                requested.word(),
                self.cpu.label()
            )
        })
    }
}

/// The widest family the CPU has (the detection macros cache their answer).
fn detect() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            return Simd::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::None
}

/// The widest family this CPU has, whatever [`SIMD_VAR`] says: what tests may run.
#[cfg(test)]
pub(crate) fn cpu() -> Simd {
    detect()
}

/// [`SIMD_VAR`] resolved against this CPU, read from the environment once. Tools call it at
/// startup to refuse a bad value and print [`Override::capped`]'s warning; the kernels read
/// [`simd`], which treats a bad value as unset.
pub fn simd_override() -> Result<Override, SimdVarError> {
    let value = std::env::var(SIMD_VAR).ok();
    Override::resolve(detect(), value.as_deref())
}

/// The family the kernels run: the CPU's widest, capped by [`SIMD_VAR`] (a value that is not
/// one of [`SIMD_VALUES`] counts as unset here: [`simd_override`] reports it). Decided once.
pub fn simd() -> Simd {
    static CHOSEN: OnceLock<Simd> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        simd_override()
            .map(|o| o.chosen)
            .unwrap_or_else(|_| detect())
    })
}

/// Defines `fn $name` over `$body` compiled three times: for AVX-512, for AVX2 with FMA, and for
/// the baseline, running the one [`simd`] chooses. Closures in the body inherit the
/// instructions. For element-wise loops whose results cannot depend on the vector width: selects
/// and compares, and `f32::mul_add` (one rounding whatever the instructions; without FMA each is
/// a call into a software routine). Nothing that sums across lanes belongs here.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis fn $name:ident$(<$($lt:lifetime),*>)?($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$attr])*
        $vis fn $name$(<$($lt),*>)?($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512$(<$($lt),*>)?($($arg: $ty),*) $body
                #[target_feature(enable = "avx2,fma")]
                fn avx2$(<$($lt),*>)?($($arg: $ty),*) $body
                match $crate::simd::simd() {
                    // SAFETY: the CPU has the features each version is compiled for.
                    $crate::simd::Simd::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::Simd::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Simd::None => {}
                }
            }
            $body
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_is_a_maximum() {
        let pick = |cpu, value| Override::resolve(cpu, value).map(|o| o.chosen);
        assert_eq!(pick(Simd::Avx512, None), Ok(Simd::Avx512));
        assert_eq!(pick(Simd::Avx512, Some("avx2")), Ok(Simd::Avx2));
        assert_eq!(pick(Simd::Avx512, Some(" AVX2 ")), Ok(Simd::Avx2));
        assert_eq!(pick(Simd::Avx512, Some("none")), Ok(Simd::None));
        assert_eq!(pick(Simd::Avx2, Some("avx2")), Ok(Simd::Avx2));
        assert_eq!(pick(Simd::None, None), Ok(Simd::None));
        // Above what the CPU has: the CPU's widest, with a warning naming both.
        let over = Override::resolve(Simd::Avx2, Some("avx512")).expect("a known value");
        assert_eq!(over.chosen, Simd::Avx2);
        let warning = over.capped().expect("a warning");
        assert!(warning.contains("CNNC_SIMD=avx512") && warning.contains("AVX2+FMA"));
        for (cpu, value) in [(Simd::Avx512, Some("avx2")), (Simd::Avx2, None)] {
            let o = Override::resolve(cpu, value).expect("a known value");
            assert_eq!(o.capped(), None, "{o:?}");
        }
    }

    #[test]
    fn an_unknown_value_names_the_variable_and_the_accepted_values() {
        for value in ["sse4", "", "avx-512"] {
            let err = Override::resolve(Simd::Avx512, Some(value)).expect_err(value);
            assert_eq!(err.value, value);
            let text = err.to_string();
            assert!(text.contains("CNNC_SIMD"), "{text}");
            assert!(text.contains("avx512, avx2, none"), "{text}");
        }
    }

    #[test]
    fn the_words_round_trip() {
        for simd in [Simd::Avx512, Simd::Avx2, Simd::None] {
            assert_eq!(Simd::parse(simd.word()), Ok(simd));
        }
        assert_eq!(
            SIMD_VALUES.map(|w| Simd::parse(w).map(Simd::word)),
            SIMD_VALUES.map(Ok)
        );
    }
}

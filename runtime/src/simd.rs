//! Which SIMD instructions the CPU has, detected once at run time, and [`multiversion!`] for
//! loops the compiler vectorises itself. The library is built for baseline x86-64 (SSE2) so that
//! one binary runs everywhere; code that needs wider vectors asks for them here.

/// The widest instruction family the runtime uses on this CPU.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Simd {
    /// AVX-512F (16 floats per register).
    Avx512,
    /// AVX2 with FMA (8 floats per register).
    Avx2,
    /// Baseline SSE2 only.
    None,
}

/// Detects the CPU's instruction family (the detection macros cache their answer).
#[cfg(target_arch = "x86_64")]
pub(crate) fn simd() -> Simd {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") {
        Simd::Avx512
    } else if has!("avx2") && has!("fma") {
        Simd::Avx2
    } else {
        Simd::None
    }
}

/// Defines `fn $name` over `$body` compiled three times: for AVX-512, for AVX2 with FMA, and for
/// the baseline, running the widest the CPU has ([`simd`]). Closures in the body inherit the
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

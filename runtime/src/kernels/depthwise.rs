//! Depthwise convolution stencils over pixel-major activations (one filter per channel, each
//! pixel's channels one contiguous run): the forward pass and the input gradient gather, for each
//! pixel, its taps' products into registers held across every tap (four vectors of channels at a
//! time, so four independent multiply-add chains are in flight) and store once; the weight and
//! bias gradients run one chain per tap and channel along a row of output pixels.
//!
//! Each element is one chain of fused multiply-adds (`f32::mul_add`, one rounding) over the taps
//! in `(ky, kx)` order, or over the output pixels in scan order for the weight gradient, leaving
//! out the taps that read padding: the same values on AVX-512, AVX2 and the portable loops,
//! whatever the vector width or the split of work. The padding is resolved per pixel and tap
//! (which taps, which columns), never per element.

use std::ops::Range;

/// The most kernel taps the per-pixel gather holds (an 8 x 8 kernel); larger kernels take
/// the caller's general path.
pub(crate) const MAX_TAPS: usize = 64;

/// Output pixels the forward pass (and a stride-1 input gradient) computes at once where no
/// tap reads padding: each weight vector loaded serves them all.
const TILE: usize = 4;

/// Which instructions the stencils run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// AVX-512F, 16 channels to a register.
    Avx512,
    /// AVX2 with FMA, 8 channels to a register.
    Avx2,
    /// Plain loops over `f32::mul_add`, for CPUs with neither.
    Portable,
}

impl Path {
    /// The widest path this CPU runs.
    pub(crate) fn detect() -> Path {
        #[cfg(target_arch = "x86_64")]
        match crate::simd::simd() {
            crate::simd::Simd::Avx512 => return Path::Avx512,
            crate::simd::Simd::Avx2 => return Path::Avx2,
            crate::simd::Simd::None => {}
        }
        Path::Portable
    }

    /// Every path this CPU runs, widest first (for tests that compare them).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Path> {
        let all = [Path::Avx512, Path::Avx2, Path::Portable];
        let widest = all.iter().position(|&p| p == Path::detect()).unwrap_or(2);
        all[widest..].to_vec()
    }
}

/// One spatial axis of a convolution: output `o` reads input `o * stride + k * dil - pad` at
/// tap `k`, when that lies in `0..input`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Axis {
    /// Input size.
    pub(crate) input: usize,
    /// Output size.
    pub(crate) output: usize,
    /// Kernel size.
    pub(crate) kernel: usize,
    /// Stride.
    pub(crate) stride: usize,
    /// Padding before the first input.
    pub(crate) pad: usize,
    /// Dilation.
    pub(crate) dil: usize,
}

impl Axis {
    /// The input that output `o` reads at tap `k`, unless it is padding.
    fn source(&self, o: usize, k: usize) -> Option<usize> {
        let i = (o * self.stride + k * self.dil).checked_sub(self.pad)?;
        (i < self.input).then_some(i)
    }

    /// The output that reads input `i` at tap `k`, if any.
    fn target(&self, i: usize, k: usize) -> Option<usize> {
        let t = (i + self.pad).checked_sub(k * self.dil)?;
        (t.is_multiple_of(self.stride) && t / self.stride < self.output).then_some(t / self.stride)
    }

    /// The outputs none of whose taps reads padding.
    fn interior(&self) -> Range<usize> {
        (0..self.kernel)
            .map(|k| self.reading(k))
            .fold(0..self.output, |a, r| {
                a.start.max(r.start)..a.end.min(r.end)
            })
    }

    /// With stride 1, the inputs every tap of which some output reads (`i + pad - k * dil` in
    /// `0..output` for every `k`); empty for larger strides.
    fn interior_targets(&self) -> Range<usize> {
        if self.stride != 1 {
            return 0..0;
        }
        let first = ((self.kernel - 1) * self.dil).saturating_sub(self.pad);
        first..self.output.saturating_sub(self.pad).min(self.input)
    }

    /// The outputs whose tap `k` reads a real input (a range: the input read grows with the
    /// output).
    fn reading(&self, k: usize) -> Range<usize> {
        let offset = k * self.dil;
        // First o with o * stride + offset >= pad, then the first with it >= input + pad.
        let first = self.pad.saturating_sub(offset).div_ceil(self.stride);
        let end = (self.input + self.pad)
            .saturating_sub(offset)
            .div_ceil(self.stride);
        first.min(self.output)..end.min(self.output).max(first.min(self.output))
    }
}

/// A depthwise convolution over `c` channels: input `[rows.input][cols.input][c]`, output
/// `[rows.output][cols.output][c]`, weights `[ky][kx][c]` (tap-major).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Depthwise {
    /// Channels (input and output).
    pub(crate) c: usize,
    /// The vertical axis.
    pub(crate) rows: Axis,
    /// The horizontal axis.
    pub(crate) cols: Axis,
}

/// A per-channel affine map and a clamp applied as the forward pass stores its output:
/// `clamp(v * scale[c] + shift[c], lo, hi)` (a multiply then an add, as batch norm's eval
/// forward; the clamp as ReLU's and ReLU6's: NaN passes, `-0.0` stays).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Store<'a> {
    /// Per-channel factors, `[c]`; `None` leaves the value as it is.
    pub(crate) affine: Option<(&'a [f32], &'a [f32])>,
    /// Lower bound (`f32::NEG_INFINITY` for none).
    pub(crate) lo: f32,
    /// Upper bound (`f32::INFINITY` for none).
    pub(crate) hi: f32,
}

impl Store<'_> {
    /// The store's map of one value of channel `ch` (what the vector stores compute).
    pub(crate) fn apply(&self, v: f32, ch: usize) -> f32 {
        let v = match self.affine {
            Some((scale, shift)) => v * scale[ch] + shift[ch],
            None => v,
        };
        let v = if v < self.lo { self.lo } else { v };
        if v > self.hi { self.hi } else { v }
    }
}

/// The raw form of a [`Store`] the path kernels take.
#[derive(Clone, Copy)]
struct RawStore {
    scale: *const f32,
    shift: *const f32,
    lo: f32,
    hi: f32,
}

impl Depthwise {
    fn taps(&self) -> usize {
        self.rows.kernel * self.cols.kernel
    }

    fn in_len(&self) -> usize {
        self.rows.input * self.cols.input * self.c
    }

    fn out_len(&self) -> usize {
        self.rows.output * self.cols.output * self.c
    }

    /// Output row `oy` of one image: `out[ox][c] = start[c] + sum over taps x * w`, then the
    /// store's map. `x` is the image, `wt` the weights `[ky][kx][c]`, `start` the bias (zeros
    /// when `None`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward_row(
        &self,
        path: Path,
        x: &[f32],
        wt: &[f32],
        start: Option<&[f32]>,
        store: Option<&Store>,
        oy: usize,
        out: &mut [f32],
    ) {
        let c = self.c;
        assert!(self.taps() <= MAX_TAPS, "depthwise kernel too large");
        assert!(x.len() >= self.in_len() && wt.len() >= self.taps() * c);
        assert!(oy < self.rows.output && out.len() == self.cols.output * c);
        assert!(start.is_none_or(|s| s.len() >= c));
        let raw = store.map(|s| raw_store(s, c));
        let s = start.map_or(std::ptr::null(), |s| s.as_ptr());
        let interior = self.cols.interior();
        let step = self.cols.stride * c;
        let mut taps = [(std::ptr::null::<f32>(), std::ptr::null::<f32>()); MAX_TAPS];
        let mut ox = 0;
        while ox < self.cols.output {
            // `pixels` outputs from `ox`: a tile where no tap of any reads padding.
            let pixels = if interior.contains(&ox) && ox + TILE <= interior.end {
                TILE
            } else {
                1
            };
            let mut n = 0;
            for ky in 0..self.rows.kernel {
                let Some(iy) = self.rows.source(oy, ky) else {
                    continue;
                };
                for kx in 0..self.cols.kernel {
                    let Some(ix) = self.cols.source(ox, kx) else {
                        continue;
                    };
                    let at = (iy * self.cols.input + ix) * c;
                    let w = (ky * self.cols.kernel + kx) * c;
                    let span = (pixels - 1) * step + c;
                    taps[n] = (x[at..at + span].as_ptr(), wt[w..w + c].as_ptr());
                    n += 1;
                }
            }
            let o = out[ox * c..(ox + pixels) * c].as_mut_ptr();
            // SAFETY: every tap points at `pixels` runs of `c` values of `x`, `step` apart (sliced
            // above), and at `c` values of `wt`; `o` at `pixels * c` values of `out`; `s` (unless
            // null) and the store's factors at `c` values.
            unsafe {
                if pixels == TILE {
                    gather_tile(path, o, c, s, &taps[..n], step, raw);
                } else {
                    gather(path, o, c, s, &taps[..n], raw);
                }
            }
            ox += pixels;
        }
    }

    /// Row `iy` of one image's input gradient: `dx[ix][c] = sum over the outputs that read
    /// it of dy * w`, taps in `(ky, kx)` order. `dy` is the image's output gradient.
    pub(crate) fn input_grad_row(
        &self,
        path: Path,
        dy: &[f32],
        wt: &[f32],
        iy: usize,
        out: &mut [f32],
    ) {
        let c = self.c;
        assert!(self.taps() <= MAX_TAPS, "depthwise kernel too large");
        assert!(dy.len() >= self.out_len() && wt.len() >= self.taps() * c);
        assert!(iy < self.rows.input && out.len() == self.cols.input * c);
        let interior = self.cols.interior_targets();
        let mut taps = [(std::ptr::null::<f32>(), std::ptr::null::<f32>()); MAX_TAPS];
        let mut ix = 0;
        while ix < self.cols.input {
            // With stride 1, consecutive inputs read consecutive outputs at every tap.
            let pixels = if interior.contains(&ix) && ix + TILE <= interior.end {
                TILE
            } else {
                1
            };
            let mut n = 0;
            for ky in 0..self.rows.kernel {
                let Some(oy) = self.rows.target(iy, ky) else {
                    continue;
                };
                for kx in 0..self.cols.kernel {
                    let Some(ox) = self.cols.target(ix, kx) else {
                        continue;
                    };
                    let at = (oy * self.cols.output + ox) * c;
                    let w = (ky * self.cols.kernel + kx) * c;
                    taps[n] = (dy[at..at + pixels * c].as_ptr(), wt[w..w + c].as_ptr());
                    n += 1;
                }
            }
            let o = out[ix * c..(ix + pixels) * c].as_mut_ptr();
            let none = std::ptr::null();
            // SAFETY: as in `forward_row`, with runs `c` apart; no start, no store.
            unsafe {
                if pixels == TILE {
                    gather_tile(path, o, c, none, &taps[..n], c, None);
                } else {
                    gather(path, o, c, none, &taps[..n], None);
                }
            }
            ix += pixels;
        }
    }

    /// Adds output row `oy`'s terms to the weight gradient `wg` (`[ky][kx][c]`) and the bias
    /// gradient `bg` (`[c]`, when given): `wg[tap][c] += x * dy` and `bg[c] += dy`, output
    /// pixels in order. `x` is the image, `dy_row` the row's output gradient.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn weight_grad_row(
        &self,
        path: Path,
        x: &[f32],
        dy_row: &[f32],
        oy: usize,
        wg: &mut [f32],
        bg: Option<&mut [f32]>,
    ) {
        let c = self.c;
        assert!(x.len() >= self.in_len() && wg.len() >= self.taps() * c);
        assert!(oy < self.rows.output && dy_row.len() == self.cols.output * c);
        if let Some(bg) = bg {
            assert!(bg.len() >= c);
            // SAFETY: `bg` holds `c` values and `dy_row` `cols.output` pixels of `c`.
            unsafe { sum_run(path, bg.as_mut_ptr(), c, dy_row.as_ptr(), self.cols.output) };
        }
        for ky in 0..self.rows.kernel {
            let Some(iy) = self.rows.source(oy, ky) else {
                continue;
            };
            for kx in 0..self.cols.kernel {
                let span = self.cols.reading(kx);
                if span.is_empty() {
                    continue;
                }
                let count = span.len();
                let first = (span.start * self.cols.stride + kx * self.cols.dil) - self.cols.pad;
                let last = first + (count - 1) * self.cols.stride;
                let row = iy * self.cols.input * c;
                let xs = &x[row + first * c..row + last * c + c];
                let ds = &dy_row[span.start * c..span.end * c];
                let tap = (ky * self.cols.kernel + kx) * c;
                let acc = wg[tap..tap + c].as_mut_ptr();
                // SAFETY: `acc` holds `c` values; pixel `j < count` of `xs` starts at
                // `j * stride * c` and of `ds` at `j * c`, each with `c` values inside the
                // slices taken above.
                unsafe {
                    dot_run(
                        path,
                        acc,
                        c,
                        (xs.as_ptr(), self.cols.stride * c),
                        ds.as_ptr(),
                        count,
                    )
                };
            }
        }
    }
}

/// The raw pointers of `store` (its factors checked to hold `c` values).
fn raw_store(store: &Store, c: usize) -> RawStore {
    let (scale, shift) = match store.affine {
        Some((scale, shift)) => {
            assert!(
                scale.len() >= c && shift.len() >= c,
                "one factor per channel"
            );
            (scale.as_ptr(), shift.as_ptr())
        }
        None => (std::ptr::null(), std::ptr::null()),
    };
    RawStore {
        scale,
        shift,
        lo: store.lo,
        hi: store.hi,
    }
}

/// `out[ch] = store(start[ch] + sum over taps (s, w) of s[ch] * w[ch])`, one chain per channel.
///
/// # Safety
/// `out` and every tap's two pointers hold `c` values; `start` is null or holds `c` values,
/// and so do the store's factors unless null; the CPU runs `path`.
unsafe fn gather(
    path: Path,
    out: *mut f32,
    c: usize,
    start: *const f32,
    taps: &[(*const f32, *const f32)],
    store: Option<RawStore>,
) {
    // SAFETY: the caller's contract, and the path's features checked at detection.
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => avx512::gather(out, c, start, taps, store),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => avx2::gather(out, c, start, taps, store),
            _ => portable::gather(out, c, start, taps, store),
        }
    }
}

/// [`gather`] for [`TILE`] pixels: pixel `p` writes `out[p * c..]` and reads each tap's
/// source at `p * step` further on (the same weights).
///
/// # Safety
/// As [`gather`], with `out` holding `TILE * c` values and every tap's source `TILE` runs of
/// `c` values `step` apart.
unsafe fn gather_tile(
    path: Path,
    out: *mut f32,
    c: usize,
    start: *const f32,
    taps: &[(*const f32, *const f32)],
    step: usize,
    store: Option<RawStore>,
) {
    // SAFETY: the caller's contract, and the path's features checked at detection.
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => avx512::gather_tile(out, c, start, taps, step, store),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => avx2::gather_tile(out, c, start, taps, step, store),
            _ => portable::gather_tile(out, c, start, taps, step, store),
        }
    }
}

/// `acc[ch] += sum over j < count of x[j * xstep + ch] * d[j * c + ch]`, `j` in order.
///
/// # Safety
/// `acc` holds `c` values, `x` and `d` hold each of the `count` pixels' `c` values at those
/// offsets; the CPU runs `path`.
unsafe fn dot_run(
    path: Path,
    acc: *mut f32,
    c: usize,
    x: (*const f32, usize),
    d: *const f32,
    count: usize,
) {
    // SAFETY: the caller's contract.
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => avx512::dot_run(acc, c, x.0, x.1, d, count),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => avx2::dot_run(acc, c, x.0, x.1, d, count),
            _ => portable::dot_run(acc, c, x.0, x.1, d, count),
        }
    }
}

/// `acc[ch] += d[j * c + ch]` for `j < count` in order.
///
/// # Safety
/// `acc` holds `c` values and `d` `count * c`; the CPU runs `path`.
unsafe fn sum_run(path: Path, acc: *mut f32, c: usize, d: *const f32, count: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => avx512::sum_run(acc, c, d, count),
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => avx2::sum_run(acc, c, d, count),
            _ => portable::sum_run(acc, c, d, count),
        }
    }
}

/// The kernels' bodies, written once over a path's vector type `V` of `N` lanes and its
/// `load`, `store`, `splat`, `fma` (`a * b + c`, one rounding), `add`, `mul` and `clamp`; each
/// path module defines those and expands this with its target features.
macro_rules! stencil_kernels {
    ($(#[$attr:meta])*) => {
        /// Vectors of channels one pass holds: four independent chains.
        const GROUP: usize = 4;

        /// One channel's scalar chain (the tails, fewer channels than a vector).
        $(#[$attr])*
        #[inline]
        unsafe fn gather_one(
            ch: usize,
            start: *const f32,
            taps: &[(*const f32, *const f32)],
            store: Option<RawStore>,
        ) -> f32 {
            // SAFETY: the caller's contract (`ch < c`).
            unsafe {
                let mut a = if start.is_null() { 0.0 } else { *start.add(ch) };
                for &(s, w) in taps {
                    a = (*s.add(ch)).mul_add(*w.add(ch), a);
                }
                match store {
                    Some(st) => store_one(a, ch, st),
                    None => a,
                }
            }
        }

        /// [`Store::apply`] over raw factors.
        #[inline(always)]
        unsafe fn store_one(v: f32, ch: usize, st: RawStore) -> f32 {
            // SAFETY: the caller's contract (`ch < c`).
            let v = if st.scale.is_null() {
                v
            } else {
                unsafe { v * *st.scale.add(ch) + *st.shift.add(ch) }
            };
            let v = if v < st.lo { st.lo } else { v };
            if v > st.hi { st.hi } else { v }
        }

        /// `G` vectors of channels from `c0`: [`gather`]'s chains held in registers.
        $(#[$attr])*
        #[inline]
        unsafe fn gather_block<const G: usize>(
            out: *mut f32,
            c0: usize,
            start: *const f32,
            taps: &[(*const f32, *const f32)],
            store: Option<RawStore>,
        ) {
            // SAFETY: `c0 + G * N <= c` (the caller's contract).
            unsafe {
                let mut acc = [splat(0.0); G];
                if !start.is_null() {
                    for (v, a) in acc.iter_mut().enumerate() {
                        *a = load(start.add(c0 + v * N));
                    }
                }
                for &(s, w) in taps {
                    for (v, a) in acc.iter_mut().enumerate() {
                        let at = c0 + v * N;
                        *a = fma(load(s.add(at)), load(w.add(at)), *a);
                    }
                }
                for (v, &a) in acc.iter().enumerate() {
                    let at = c0 + v * N;
                    let a = match store {
                        Some(st) => {
                            let a = if st.scale.is_null() {
                                a
                            } else {
                                add(mul(a, load(st.scale.add(at))), load(st.shift.add(at)))
                            };
                            clamp(a, st.lo, st.hi)
                        }
                        None => a,
                    };
                    store_v(out.add(at), a);
                }
            }
        }

        /// See the module's `gather`.
        $(#[$attr])*
        pub(super) unsafe fn gather(
            out: *mut f32,
            c: usize,
            start: *const f32,
            taps: &[(*const f32, *const f32)],
            store: Option<RawStore>,
        ) {
            // SAFETY: every block and channel below is under `c` (the caller's contract).
            unsafe {
                let mut c0 = 0;
                while c0 + N <= c {
                    let g = ((c - c0) / N).min(GROUP);
                    match g {
                        4 => gather_block::<4>(out, c0, start, taps, store),
                        3 => gather_block::<3>(out, c0, start, taps, store),
                        2 => gather_block::<2>(out, c0, start, taps, store),
                        _ => gather_block::<1>(out, c0, start, taps, store),
                    }
                    c0 += g * N;
                }
                for ch in c0..c {
                    *out.add(ch) = gather_one(ch, start, taps, store);
                }
            }
        }

        /// `G` vectors of channels from `c0` of [`TILE`] pixels: [`gather_tile`]'s chains in
        /// registers, each weight vector loaded once for every pixel.
        $(#[$attr])*
        #[inline]
        unsafe fn tile_block<const G: usize>(
            out: *mut f32,
            c0: usize,
            c: usize,
            start: *const f32,
            taps: &[(*const f32, *const f32)],
            step: usize,
            store: Option<RawStore>,
        ) {
            // SAFETY: `c0 + G * N <= c` and the caller's bounds on the pixels.
            unsafe {
                let mut acc = [[splat(0.0); G]; TILE];
                if !start.is_null() {
                    for a in acc.iter_mut() {
                        for (v, a) in a.iter_mut().enumerate() {
                            *a = load(start.add(c0 + v * N));
                        }
                    }
                }
                for &(s, w) in taps {
                    let mut wv = [splat(0.0); G];
                    for (v, wv) in wv.iter_mut().enumerate() {
                        *wv = load(w.add(c0 + v * N));
                    }
                    for (p, a) in acc.iter_mut().enumerate() {
                        let sp = s.add(p * step + c0);
                        for (v, a) in a.iter_mut().enumerate() {
                            *a = fma(load(sp.add(v * N)), wv[v], *a);
                        }
                    }
                }
                for (p, a) in acc.iter().enumerate() {
                    for (v, &a) in a.iter().enumerate() {
                        let at = c0 + v * N;
                        let a = match store {
                            Some(st) => {
                                let a = if st.scale.is_null() {
                                    a
                                } else {
                                    add(mul(a, load(st.scale.add(at))), load(st.shift.add(at)))
                                };
                                clamp(a, st.lo, st.hi)
                            }
                            None => a,
                        };
                        store_v(out.add(p * c + at), a);
                    }
                }
            }
        }

        /// See the module's `gather_tile`.
        $(#[$attr])*
        pub(super) unsafe fn gather_tile(
            out: *mut f32,
            c: usize,
            start: *const f32,
            taps: &[(*const f32, *const f32)],
            step: usize,
            store: Option<RawStore>,
        ) {
            // SAFETY: every block and channel below is under `c` (the caller's contract).
            unsafe {
                let mut c0 = 0;
                while c0 + 2 * N <= c {
                    tile_block::<2>(out, c0, c, start, taps, step, store);
                    c0 += 2 * N;
                }
                if c0 + N <= c {
                    tile_block::<1>(out, c0, c, start, taps, step, store);
                    c0 += N;
                }
                for p in 0..TILE {
                    for ch in c0..c {
                        let mut a = if start.is_null() { 0.0 } else { *start.add(ch) };
                        for &(s, w) in taps {
                            a = (*s.add(p * step + ch)).mul_add(*w.add(ch), a);
                        }
                        *out.add(p * c + ch) = match store {
                            Some(st) => store_one(a, ch, st),
                            None => a,
                        };
                    }
                }
            }
        }

        /// `G` vectors of channels from `c0`: [`dot_run`]'s chains held in registers.
        $(#[$attr])*
        #[inline]
        unsafe fn dot_block<const G: usize>(
            acc: *mut f32,
            c0: usize,
            c: usize,
            x: (*const f32, usize),
            d: *const f32,
            count: usize,
        ) {
            // SAFETY: `c0 + G * N <= c` and the caller's bounds on the pixels.
            unsafe {
                let mut a = [splat(0.0); G];
                for (v, a) in a.iter_mut().enumerate() {
                    *a = load(acc.add(c0 + v * N));
                }
                for j in 0..count {
                    let (xj, dj) = (x.0.add(j * x.1 + c0), d.add(j * c + c0));
                    for (v, a) in a.iter_mut().enumerate() {
                        *a = fma(load(xj.add(v * N)), load(dj.add(v * N)), *a);
                    }
                }
                for (v, &a) in a.iter().enumerate() {
                    store_v(acc.add(c0 + v * N), a);
                }
            }
        }

        /// See the module's `dot_run`.
        $(#[$attr])*
        pub(super) unsafe fn dot_run(
            acc: *mut f32,
            c: usize,
            x: *const f32,
            xstep: usize,
            d: *const f32,
            count: usize,
        ) {
            // SAFETY: every offset below is within the caller's bounds.
            unsafe {
                let mut c0 = 0;
                while c0 + N <= c {
                    let g = ((c - c0) / N).min(GROUP);
                    let xs = (x, xstep);
                    match g {
                        4 => dot_block::<4>(acc, c0, c, xs, d, count),
                        3 => dot_block::<3>(acc, c0, c, xs, d, count),
                        2 => dot_block::<2>(acc, c0, c, xs, d, count),
                        _ => dot_block::<1>(acc, c0, c, xs, d, count),
                    }
                    c0 += g * N;
                }
                for ch in c0..c {
                    let mut a = *acc.add(ch);
                    for j in 0..count {
                        a = (*x.add(j * xstep + ch)).mul_add(*d.add(j * c + ch), a);
                    }
                    *acc.add(ch) = a;
                }
            }
        }

        /// See the module's `sum_run`.
        $(#[$attr])*
        pub(super) unsafe fn sum_run(acc: *mut f32, c: usize, d: *const f32, count: usize) {
            // SAFETY: every offset below is within the caller's bounds.
            unsafe {
                let mut c0 = 0;
                while c0 + N <= c {
                    let mut a = load(acc.add(c0));
                    for j in 0..count {
                        a = add(a, load(d.add(j * c + c0)));
                    }
                    store_v(acc.add(c0), a);
                    c0 += N;
                }
                for ch in c0..c {
                    let mut a = *acc.add(ch);
                    for j in 0..count {
                        a += *d.add(j * c + ch);
                    }
                    *acc.add(ch) = a;
                }
            }
        }
    };
}

/// AVX-512F: 16 channels to a register.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{RawStore, TILE};

    const N: usize = 16;

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load(p: *const f32) -> __m512 {
        // SAFETY: the caller bounds the 16 values.
        unsafe { _mm512_loadu_ps(p) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_v(p: *mut f32, v: __m512) {
        // SAFETY: the caller bounds the 16 values.
        unsafe { _mm512_storeu_ps(p, v) }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn splat(v: f32) -> __m512 {
        _mm512_set1_ps(v)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }

    /// `v < lo ? lo : v`, then `> hi ? hi`: NaN and `-0.0` pass, as the scalar clamp.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn clamp(v: __m512, lo: f32, hi: f32) -> __m512 {
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        let v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, lo), lo);
        _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, hi), hi)
    }

    stencil_kernels!(#[target_feature(enable = "avx512f,avx2,fma")]);
}

/// AVX2 with FMA: 8 channels to a register.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{RawStore, TILE};

    const N: usize = 8;

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(p: *const f32) -> __m256 {
        // SAFETY: the caller bounds the 8 values.
        unsafe { _mm256_loadu_ps(p) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store_v(p: *mut f32, v: __m256) {
        // SAFETY: the caller bounds the 8 values.
        unsafe { _mm256_storeu_ps(p, v) }
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn splat(v: f32) -> __m256 {
        _mm256_set1_ps(v)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }

    /// `v < lo ? lo : v`, then `> hi ? hi`: NaN and `-0.0` pass, as the scalar clamp.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn clamp(v: __m256, lo: f32, hi: f32) -> __m256 {
        let (lo, hi) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
        let v = _mm256_blendv_ps(v, lo, _mm256_cmp_ps::<_CMP_LT_OQ>(v, lo));
        _mm256_blendv_ps(v, hi, _mm256_cmp_ps::<_CMP_GT_OQ>(v, hi))
    }

    stencil_kernels!(#[target_feature(enable = "avx2,fma")]);
}

/// Plain scalar loops (`f32::mul_add`, a software routine without FMA): one channel a "vector".
mod portable {
    use super::{RawStore, TILE};

    const N: usize = 1;

    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller bounds the value.
        unsafe { *p }
    }

    #[inline(always)]
    unsafe fn store_v(p: *mut f32, v: f32) {
        // SAFETY: the caller bounds the value.
        unsafe { *p = v }
    }

    #[inline(always)]
    fn splat(v: f32) -> f32 {
        v
    }

    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    fn add(a: f32, b: f32) -> f32 {
        a + b
    }

    #[inline(always)]
    fn mul(a: f32, b: f32) -> f32 {
        a * b
    }

    #[inline(always)]
    fn clamp(v: f32, lo: f32, hi: f32) -> f32 {
        let v = if v < lo { lo } else { v };
        if v > hi { hi } else { v }
    }

    stencil_kernels!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0)
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|f| f.to_bits()).collect()
    }

    /// Geometries with ragged channel counts (tails of every path), strides, dilations and
    /// padding wider than the kernel's reach.
    fn cases() -> Vec<Depthwise> {
        let axis = |input, kernel, stride, pad, dil| {
            let output = (input + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
            Axis {
                input,
                output,
                kernel,
                stride,
                pad,
                dil,
            }
        };
        let mut out = Vec::new();
        for c in [1, 7, 16, 24, 40, 72, 144] {
            out.push(Depthwise {
                c,
                rows: axis(5, 3, 1, 1, 1),
                cols: axis(6, 3, 1, 1, 1),
            });
            out.push(Depthwise {
                c,
                rows: axis(7, 3, 2, 1, 1),
                cols: axis(8, 3, 2, 1, 1),
            });
        }
        for c in [5, 48] {
            // Wide rows: tiles of four pixels, with and without stride.
            out.push(Depthwise {
                c,
                rows: axis(4, 3, 1, 1, 1),
                cols: axis(21, 3, 1, 1, 1),
            });
            out.push(Depthwise {
                c,
                rows: axis(5, 3, 2, 1, 1),
                cols: axis(23, 3, 2, 1, 1),
            });
            out.push(Depthwise {
                c,
                rows: axis(3, 5, 1, 2, 1),
                cols: axis(19, 5, 1, 2, 2),
            });
        }
        for c in [3, 32] {
            out.push(Depthwise {
                c,
                rows: axis(9, 5, 1, 2, 1),
                cols: axis(7, 5, 2, 2, 1),
            });
            out.push(Depthwise {
                c,
                rows: axis(6, 3, 1, 3, 2),
                cols: axis(5, 2, 3, 0, 1),
            });
        }
        out
    }

    /// The forward pass written out per element: bias, then `mul_add` over the real taps.
    fn forward_ref(d: &Depthwise, x: &[f32], wt: &[f32], bias: &[f32], st: &Store) -> Vec<f32> {
        let (rows, cols, c) = (d.rows, d.cols, d.c);
        let mut y = vec![0.0; d.out_len()];
        for oy in 0..rows.output {
            for ox in 0..cols.output {
                for ch in 0..c {
                    let mut a = bias[ch];
                    for ky in 0..rows.kernel {
                        for kx in 0..cols.kernel {
                            if let (Some(iy), Some(ix)) = (rows.source(oy, ky), cols.source(ox, kx))
                            {
                                let v = x[(iy * cols.input + ix) * c + ch];
                                a = v.mul_add(wt[(ky * cols.kernel + kx) * c + ch], a);
                            }
                        }
                    }
                    y[(oy * cols.output + ox) * c + ch] = st.apply(a, ch);
                }
            }
        }
        y
    }

    #[test]
    fn forward_is_one_chain_per_element_on_every_path() {
        for d in cases() {
            let c = d.c;
            let x = values(d.in_len(), 1);
            let wt = values(d.taps() * c, 2);
            let bias = values(c, 3);
            let plain = Store {
                affine: None,
                lo: f32::NEG_INFINITY,
                hi: f32::INFINITY,
            };
            let (scale, shift) = (values(c, 4), values(c, 5));
            let fused = Store {
                affine: Some((&scale, &shift)),
                lo: 0.0,
                hi: 0.5,
            };
            for st in [&plain, &fused] {
                let want = forward_ref(&d, &x, &wt, &bias, st);
                let row = d.cols.output * c;
                for path in Path::available() {
                    let mut got = vec![f32::NAN; d.out_len()];
                    for oy in 0..d.rows.output {
                        let out = &mut got[oy * row..(oy + 1) * row];
                        d.forward_row(path, &x, &wt, Some(&bias), Some(st), oy, out);
                    }
                    assert_eq!(bits(&got), bits(&want), "{path:?} {d:?} {st:?}");
                }
            }
        }
    }

    #[test]
    fn store_keeps_nan_and_negative_zero_as_the_scalar_clamp() {
        let d = Depthwise {
            c: 40,
            rows: Axis {
                input: 1,
                output: 1,
                kernel: 1,
                stride: 1,
                pad: 0,
                dil: 1,
            },
            cols: Axis {
                input: 1,
                output: 1,
                kernel: 1,
                stride: 1,
                pad: 0,
                dil: 1,
            },
        };
        let special = [f32::NAN, -0.0, 0.0, -1.0, 3.0, 7.0, f32::INFINITY];
        let x: Vec<f32> = (0..40).map(|i| special[i % special.len()]).collect();
        let st = Store {
            affine: None,
            lo: 0.0,
            hi: 6.0,
        };
        // From -0.0, so a -0.0 input sums to -0.0.
        let start = [-0.0; 40];
        let want: Vec<f32> = x
            .iter()
            .map(|&v| st.apply(v.mul_add(1.0, -0.0), 0))
            .collect();
        for path in Path::available() {
            let mut got = vec![1.0; 40];
            d.forward_row(path, &x, &[1.0; 40], Some(&start), Some(&st), 0, &mut got);
            assert_eq!(bits(&got), bits(&want), "{path:?}");
        }
        assert!(want[0].is_nan() && want[1].to_bits() == (-0.0f32).to_bits());
    }

    #[test]
    fn input_gradient_is_one_chain_per_element_on_every_path() {
        for d in cases() {
            let (rows, cols, c) = (d.rows, d.cols, d.c);
            let dy = values(d.out_len(), 6);
            let wt = values(d.taps() * c, 7);
            let mut want = vec![0.0; d.in_len()];
            for iy in 0..rows.input {
                for ix in 0..cols.input {
                    for ch in 0..c {
                        let mut a = 0.0f32;
                        for ky in 0..rows.kernel {
                            for kx in 0..cols.kernel {
                                if let (Some(oy), Some(ox)) =
                                    (rows.target(iy, ky), cols.target(ix, kx))
                                {
                                    let v = dy[(oy * cols.output + ox) * c + ch];
                                    a = v.mul_add(wt[(ky * cols.kernel + kx) * c + ch], a);
                                }
                            }
                        }
                        want[(iy * cols.input + ix) * c + ch] = a;
                    }
                }
            }
            let row = cols.input * c;
            for path in Path::available() {
                let mut got = vec![f32::NAN; d.in_len()];
                for iy in 0..rows.input {
                    d.input_grad_row(path, &dy, &wt, iy, &mut got[iy * row..(iy + 1) * row]);
                }
                assert_eq!(bits(&got), bits(&want), "{path:?} {d:?}");
            }
        }
    }

    #[test]
    fn weight_gradient_is_one_chain_per_element_on_every_path() {
        for d in cases() {
            let (rows, cols, c) = (d.rows, d.cols, d.c);
            let x = values(d.in_len(), 8);
            let dy = values(d.out_len(), 9);
            let (mut want_w, mut want_b) = (values(d.taps() * c, 10), values(c, 11));
            for oy in 0..rows.output {
                for ox in 0..cols.output {
                    for ch in 0..c {
                        let g = dy[(oy * cols.output + ox) * c + ch];
                        want_b[ch] += g;
                        for ky in 0..rows.kernel {
                            for kx in 0..cols.kernel {
                                if let (Some(iy), Some(ix)) =
                                    (rows.source(oy, ky), cols.source(ox, kx))
                                {
                                    let w = &mut want_w[(ky * cols.kernel + kx) * c + ch];
                                    *w = x[(iy * cols.input + ix) * c + ch].mul_add(g, *w);
                                }
                            }
                        }
                    }
                }
            }
            let row = cols.output * c;
            for path in Path::available() {
                let (mut wg, mut bg) = (values(d.taps() * c, 10), values(c, 11));
                for oy in 0..rows.output {
                    let dy_row = &dy[oy * row..(oy + 1) * row];
                    d.weight_grad_row(path, &x, dy_row, oy, &mut wg, Some(&mut bg));
                }
                assert_eq!(bits(&wg), bits(&want_w), "{path:?} {d:?}");
                assert_eq!(bits(&bg), bits(&want_b), "{path:?} {d:?}");
            }
        }
    }

    #[test]
    fn reading_is_the_outputs_with_a_real_source() {
        for d in cases() {
            for axis in [d.rows, d.cols] {
                let interior: Vec<usize> = (0..axis.output)
                    .filter(|&o| (0..axis.kernel).all(|k| axis.source(o, k).is_some()))
                    .collect();
                assert_eq!(axis.interior().collect::<Vec<_>>(), interior, "{axis:?}");
                if axis.stride == 1 {
                    let targets: Vec<usize> = (0..axis.input)
                        .filter(|&i| (0..axis.kernel).all(|k| axis.target(i, k).is_some()))
                        .collect();
                    let got: Vec<usize> = axis.interior_targets().collect();
                    assert_eq!(got, targets, "{axis:?}");
                }
                for k in 0..axis.kernel {
                    let want: Vec<usize> = (0..axis.output)
                        .filter(|&o| axis.source(o, k).is_some())
                        .collect();
                    let got: Vec<usize> = axis.reading(k).collect();
                    assert_eq!(got, want, "{axis:?} tap {k}");
                }
            }
        }
    }
}

//! Pooling window kernels over pixel-major activations, vectorised along channels: the maximum
//! of a window and where it lies, the routing of a gradient back to that position, a window's
//! mean and the spreading of a gradient over it, and the channel-run arithmetic of the
//! resampling layers. Shared by the max and average pools, the max pool fused into a
//! convolution, the adaptive pools and upsampling. Every element is computed by the same
//! operations in the same order on every path (no sum across lanes), so the vector width
//! changes no bit.

use crate::simd::multiversion;

/// The `argmax` of an output value whose gradient goes nowhere: masked by the ReLU before.
pub(crate) const NONE: u16 = u16::MAX;

/// Whether the CPU runs the AVX-512 window kernels (detected once per pass).
#[derive(Clone, Copy)]
pub(crate) struct Wide(bool);

impl Wide {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        return Wide(crate::simd::simd() == crate::simd::Simd::Avx512);
        #[cfg(not(target_arch = "x86_64"))]
        Wide(false)
    }
}

/// One pooling window in an image, `c` channels: position `(iy, ix)` of `rows x cols` holds them
/// at `iy * row + ix * col`.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    rows: (usize, usize),
    cols: (usize, usize),
    row: usize,
    col: usize,
    c: usize,
}

impl Window {
    /// The window `rows x cols` of a buffer whose rows lie `row` values apart and whose pixels
    /// `col` apart, each with `c <= col` channels.
    pub(crate) fn strided(
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        row: usize,
        col: usize,
        c: usize,
    ) -> Self {
        Window {
            rows: (rows.start, rows.end),
            cols: (cols.start, cols.end),
            row,
            col,
            c,
        }
    }

    /// Offsets of the window's positions in scan order (rows, then columns).
    #[inline]
    fn offsets(self) -> impl Iterator<Item = usize> + Clone {
        (self.rows.0..self.rows.1).flat_map(move |iy| {
            (self.cols.0..self.cols.1).map(move |ix| iy * self.row + ix * self.col)
        })
    }

    /// Panics unless every position's channels lie in `len` values.
    fn check(self, len: usize) {
        let end = (self.rows.1 > self.rows.0 && self.cols.1 > self.cols.0)
            .then(|| (self.rows.1 - 1) * self.row + (self.cols.1 - 1) * self.col + self.c);
        assert!(end.unwrap_or(0) <= len, "pool window runs past its image");
    }

    /// `out[ch]` = the maximum of channel `ch` over the window and `argmax[ch]` its position in
    /// scan order: the first maximum, or the last NaN, which wins as in PyTorch (an all -inf or
    /// empty window gives position 0). With `relu`, [`NONE`] where the maximum is not positive.
    pub(crate) fn max(
        self,
        wide: Wide,
        x: &[f32],
        out: &mut [f32],
        argmax: &mut [u16],
        relu: bool,
    ) {
        self.check(x.len());
        assert!(
            out.len() == self.c && argmax.len() == self.c,
            "one output pixel"
        );
        #[cfg(target_arch = "x86_64")]
        if wide.0 {
            // SAFETY: `check` bounds every read, `out` and `argmax` hold `c` values, and `wide`
            // says the CPU has AVX-512F.
            return unsafe {
                avx512::max(
                    self,
                    x.as_ptr(),
                    out.as_mut_ptr(),
                    argmax.as_mut_ptr(),
                    relu,
                )
            };
        }
        #[cfg(target_arch = "x86_64")]
        if crate::simd::simd() == crate::simd::Simd::Avx2 && self.c >= 8 {
            // Whole blocks of eight channels in the AVX2 kernel, the rest in the loop below.
            let full = self.c / 8 * 8;
            // SAFETY: `check` bounds every read of the window's first `full <= c` channels,
            // `out` and `argmax` hold `c` values, and the CPU has AVX2.
            unsafe {
                avx2::max(
                    Window { c: full, ..self },
                    x.as_ptr(),
                    out.as_mut_ptr(),
                    argmax.as_mut_ptr(),
                    relu,
                )
            };
            let tail = Window {
                c: self.c - full,
                ..self
            };
            let (x, out, argmax) = (&x[full..], &mut out[full..], &mut argmax[full..]);
            return window_max(tail, x, out, argmax, relu);
        }
        let _ = wide;
        window_max(self, x, out, argmax, relu);
    }

    /// Stores the window's `dx` (the window overlaps no other): `0.0 + dy` at the position
    /// `argmax` names, zeros elsewhere. The sum is what [`Window::add`] gives by adding into
    /// zeros (it turns -0.0 into 0.0), so both give the same bits.
    pub(crate) fn store(self, wide: Wide, argmax: &[u16], dy: &[f32], dx: &mut [f32]) {
        self.check(dx.len());
        assert!(
            argmax.len() == self.c && dy.len() == self.c,
            "one output pixel"
        );
        #[cfg(target_arch = "x86_64")]
        if wide.0 {
            // SAFETY: `check` bounds every write to `dx`, `argmax` and `dy` hold `c` values, and
            // `wide` says the CPU has AVX-512F.
            return unsafe { avx512::store(self, argmax.as_ptr(), dy.as_ptr(), dx.as_mut_ptr()) };
        }
        #[cfg(target_arch = "x86_64")]
        if crate::simd::simd() == crate::simd::Simd::Avx2 && self.c >= 8 {
            // As in `max`: whole blocks of eight channels in the AVX2 kernel.
            let full = self.c / 8 * 8;
            // SAFETY: `check` bounds every write of the window's first `full <= c` channels,
            // `argmax` and `dy` hold `c` values, and the CPU has AVX2.
            unsafe {
                avx2::store(
                    Window { c: full, ..self },
                    argmax.as_ptr(),
                    dy.as_ptr(),
                    dx.as_mut_ptr(),
                )
            };
            let tail = Window {
                c: self.c - full,
                ..self
            };
            return window_store(tail, &argmax[full..], &dy[full..], &mut dx[full..]);
        }
        let _ = wide;
        window_store(self, argmax, dy, dx);
    }

    /// The number of positions in the window.
    pub(crate) fn len(self) -> usize {
        (self.rows.1 - self.rows.0) * (self.cols.1 - self.cols.0)
    }

    /// The position with scan-order index `p` as `(row, column)` within the buffer's grid.
    pub(crate) fn position(self, p: usize) -> (usize, usize) {
        let width = (self.cols.1 - self.cols.0).max(1);
        (self.rows.0 + p / width, self.cols.0 + p % width)
    }

    /// `out[ch]` = the sum of channel `ch` over the window, from `0.0` in scan order, divided by
    /// `divisor`.
    pub(crate) fn mean(self, x: &[f32], out: &mut [f32], divisor: f32) {
        self.check(x.len());
        assert!(out.len() == self.c, "one output pixel");
        window_sum(self, x, out);
        div(out, divisor);
    }

    /// Adds `grad[ch] / divisor` to channel `ch` of every position of the window in `dx`, in
    /// scan order.
    pub(crate) fn spread(self, grad: &[f32], divisor: f32, dx: &mut [f32]) {
        self.check(dx.len());
        assert!(grad.len() == self.c, "one output pixel");
        window_spread(self, grad, divisor, dx);
    }

    /// Adds `dy` into `dx` at the positions `argmax` names: for windows that overlap, in the
    /// order of the output pixels.
    pub(crate) fn add(self, argmax: &[u16], dy: &[f32], dx: &mut [f32]) {
        let positions = self.rows.1.saturating_sub(self.rows.0) * (self.cols.1 - self.cols.0);
        if positions <= ADD_POSITIONS {
            // Each position's offset once for the window, not a division for every channel
            // (ResNet-18's 3 x 3 stride-2 max pool at 32 x 32: its backward 1.9-2.5 -> 1.1-1.5 ms).
            let mut at = [0; ADD_POSITIONS];
            for (slot, offset) in at.iter_mut().zip(self.offsets()) {
                *slot = offset;
            }
            let at = &at[..positions];
            for (ch, (&i, &grad)) in argmax.iter().zip(dy).enumerate() {
                // `NONE` and any position past the window's are no position of it.
                if let Some(&at) = at.get(usize::from(i)) {
                    dx[at + ch] += grad;
                }
            }
            return;
        }
        for (ch, (&i, &grad)) in argmax.iter().zip(dy).enumerate() {
            let (iy, ix) = self.position(usize::from(i));
            if i != NONE && iy < self.rows.1 {
                dx[iy * self.row + ix * self.col + ch] += grad;
            }
        }
    }
}

/// Most positions of a window whose offsets [`Window::add`] works out once for the window.
const ADD_POSITIONS: usize = 16;

/// Most positions of a window [`Tiles`] passes to its AVX-512 kernels (a 4 x 4 pool's).
#[cfg(target_arch = "x86_64")]
const TILE_POSITIONS: usize = 16;

/// A grid of `kh x kw` windows that tile a buffer whose rows lie `row` values apart and whose
/// pixels `col` apart, each with `c <= col` channels, `per_row` windows a row: window `p` (in
/// row-major order) covers rows `p / per_row * kh..` and columns `p % per_row * kw..`. Its
/// kernels do for every window what [`Window`]'s do for one, with the same values, in one
/// dispatch (a call a window cost a fifth of the seed model's first convolution with its fused
/// pool).
#[derive(Clone, Copy)]
pub(crate) struct Tiles {
    pub(crate) kh: usize,
    pub(crate) kw: usize,
    pub(crate) per_row: usize,
    pub(crate) row: usize,
    pub(crate) col: usize,
    pub(crate) c: usize,
}

impl Tiles {
    /// Window `p`.
    fn window(self, p: usize) -> Window {
        let (r, px) = (p / self.per_row, p % self.per_row);
        let (kh, kw) = (self.kh, self.kw);
        Window::strided(
            r * kh..(r + 1) * kh,
            px * kw..(px + 1) * kw,
            self.row,
            self.col,
            self.c,
        )
    }

    /// The windows of `pixels` values `c` apart (`c` each), after checking that they lie in
    /// `len` values (the last reads furthest).
    fn count(self, pixels: usize, len: usize) -> usize {
        assert!(self.c > 0 && self.per_row > 0, "whole windows");
        assert!(pixels.is_multiple_of(self.c), "whole output pixels");
        let count = pixels / self.c;
        if count > 0 {
            self.window(count - 1).check(len);
        }
        count
    }

    /// [`Window::max`] of each window, into pixel `p` of `out` and `argmax` (`c` values each).
    pub(crate) fn max(
        self,
        wide: Wide,
        x: &[f32],
        out: &mut [f32],
        argmax: &mut [u16],
        relu: bool,
    ) {
        assert!(out.len() == argmax.len(), "one position per output value");
        let count = self.count(out.len(), x.len());
        #[cfg(target_arch = "x86_64")]
        if let (true, Some((offsets, len))) = (wide.0, self.offsets()) {
            // SAFETY: `count` bounds every window's reads, `out` and `argmax` hold `c` values a
            // window, and `wide` says the CPU has AVX-512F.
            return unsafe {
                avx512::max_tiles(
                    self,
                    count,
                    &offsets[..len],
                    x.as_ptr(),
                    out.as_mut_ptr(),
                    argmax.as_mut_ptr(),
                    relu,
                )
            };
        }
        let pixels = out
            .chunks_exact_mut(self.c)
            .zip(argmax.chunks_exact_mut(self.c));
        for (p, (out, argmax)) in pixels.enumerate() {
            self.window(p).max(wide, x, out, argmax, relu);
        }
    }

    /// [`Window::store`] of each window, from pixel `p` of `argmax` and `dy` (`c` values each).
    pub(crate) fn store(self, wide: Wide, argmax: &[u16], dy: &[f32], dx: &mut [f32]) {
        assert!(argmax.len() == dy.len(), "one position per gradient value");
        let count = self.count(dy.len(), dx.len());
        #[cfg(target_arch = "x86_64")]
        if let (true, Some((offsets, len))) = (wide.0, self.offsets()) {
            // SAFETY: `count` bounds every window's writes, `argmax` and `dy` hold `c` values a
            // window, and `wide` says the CPU has AVX-512F.
            return unsafe {
                avx512::store_tiles(
                    self,
                    count,
                    &offsets[..len],
                    argmax.as_ptr(),
                    dy.as_ptr(),
                    dx.as_mut_ptr(),
                )
            };
        }
        let pixels = argmax.chunks_exact(self.c).zip(dy.chunks_exact(self.c));
        for (p, (argmax, dy)) in pixels.enumerate() {
            self.window(p).store(wide, argmax, dy, dx);
        }
    }

    /// The offsets of a window's positions past its first, in scan order, in an array (no
    /// allocation: inference allocates nothing once warm), and how many there are; `None` for
    /// windows of more than [`TILE_POSITIONS`], which go a call a window.
    #[cfg(target_arch = "x86_64")]
    fn offsets(self) -> Option<([usize; TILE_POSITIONS], usize)> {
        let len = self.kh * self.kw;
        let mut offsets = [0; TILE_POSITIONS];
        for (slot, at) in offsets.iter_mut().zip(self.window(0).offsets()) {
            *slot = at;
        }
        (len <= TILE_POSITIONS).then_some((offsets, len))
    }

    /// Where window `p` starts.
    #[inline(always)]
    fn first(self, p: usize) -> usize {
        p / self.per_row * self.kh * self.row + p % self.per_row * self.kw * self.col
    }
}

/// Channels a window sum or spread keeps in registers across the window's positions.
const BLOCK: usize = 32;

multiversion! {
    /// [`Window::max`] without the AVX-512 kernel: selects, not branches, so the channel loop
    /// vectorises (with AVX2 where the CPU has it; the portable build's SSE2 loop took six
    /// times as long as the AVX-512 kernel in the seed model's fused max pool).
    fn window_max(w: Window, x: &[f32], out: &mut [f32], argmax: &mut [u16], relu: bool) {
        out.fill(f32::NEG_INFINITY);
        argmax.fill(0);
        for (p, at) in w.offsets().enumerate() {
            let lanes = out.iter_mut().zip(argmax.iter_mut());
            for ((m, i), &v) in lanes.zip(&x[at..at + w.c]) {
                let take = v > *m || v.is_nan();
                *m = if take { v } else { *m };
                *i = if take { p as u16 } else { *i };
            }
        }
        if relu {
            for (i, &m) in argmax.iter_mut().zip(out.iter()) {
                *i = if m > 0.0 { *i } else { NONE };
            }
        }
    }
}

multiversion! {
    /// [`Window::store`] without the AVX-512 kernel (vectorised as [`window_max`]).
    fn window_store(w: Window, argmax: &[u16], dy: &[f32], dx: &mut [f32]) {
        for (p, at) in w.offsets().enumerate() {
            let lanes = dx[at..at + w.c].iter_mut().zip(argmax.iter().zip(dy));
            for (d, (&i, &grad)) in lanes {
                *d = if usize::from(i) == p { 0.0 + grad } else { 0.0 };
            }
        }
    }
}

multiversion! {
    /// `out[ch]` = `0.0 + x[at + ch]` over every position `at` of `w`, in scan order (one
    /// dispatch for the whole window; blocks of channels summed in registers, stored once).
    fn window_sum(w: Window, x: &[f32], out: &mut [f32]) {
        let mut c0 = 0;
        while c0 + BLOCK <= w.c {
            let mut acc = [0.0f32; BLOCK];
            for iy in w.rows.0..w.rows.1 {
                for ix in w.cols.0..w.cols.1 {
                    let at = iy * w.row + ix * w.col + c0;
                    for (a, &v) in acc.iter_mut().zip(&x[at..at + BLOCK]) {
                        *a += v;
                    }
                }
            }
            out[c0..c0 + BLOCK].copy_from_slice(&acc);
            c0 += BLOCK;
        }
        out[c0..].fill(0.0);
        for iy in w.rows.0..w.rows.1 {
            for ix in w.cols.0..w.cols.1 {
                let at = iy * w.row + ix * w.col;
                for (o, &v) in out[c0..].iter_mut().zip(&x[at + c0..at + w.c]) {
                    *o += v;
                }
            }
        }
    }
}

multiversion! {
    /// `dx[at + ch] += grad[ch] / d` for every position `at` of `w`, in scan order (each
    /// quotient computed once: the same value at every position).
    fn window_spread(w: Window, grad: &[f32], d: f32, dx: &mut [f32]) {
        let mut c0 = 0;
        while c0 < w.c {
            let len = (w.c - c0).min(BLOCK);
            let mut q = [0.0f32; BLOCK];
            for (q, &g) in q.iter_mut().zip(&grad[c0..c0 + len]) {
                *q = g / d;
            }
            for iy in w.rows.0..w.rows.1 {
                for ix in w.cols.0..w.cols.1 {
                    let at = iy * w.row + ix * w.col + c0;
                    for (o, &q) in dx[at..at + len].iter_mut().zip(&q) {
                        *o += q;
                    }
                }
            }
            c0 += len;
        }
    }
}

multiversion! {
    /// `out[i] += x[i]`.
    pub(crate) fn add(out: &mut [f32], x: &[f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o += v;
        }
    }
}

multiversion! {
    /// `out[i] /= d`.
    pub(crate) fn div(out: &mut [f32], d: f32) {
        for o in out {
            *o /= d;
        }
    }
}

multiversion! {
    /// `out[i] += w * g[i]`.
    pub(crate) fn add_scaled(out: &mut [f32], g: &[f32], w: f32) {
        for (o, &v) in out.iter_mut().zip(g) {
            *o += w * v;
        }
    }
}

multiversion! {
    /// Bilinear interpolation of four pixels' channels: `out[i] = wy.0 * (wx.0 * top.0[i] +
    /// wx.1 * top.1[i]) + wy.1 * (wx.0 * bottom.0[i] + wx.1 * bottom.1[i])`.
    pub(crate) fn lerp2(
        out: &mut [f32],
        top: (&[f32], &[f32]),
        bottom: (&[f32], &[f32]),
        wy: (f32, f32),
        wx: (f32, f32),
    ) {
        let pixels = top.0.iter().zip(top.1).zip(bottom.0.iter().zip(bottom.1));
        for (o, ((&x00, &x01), (&x10, &x11))) in out.iter_mut().zip(pixels) {
            *o = wy.0 * (wx.0 * x00 + wx.1 * x01) + wy.1 * (wx.0 * x10 + wx.1 * x11);
        }
    }
}

/// The [`Window`] kernels with AVX-512, 16 channels to a register, up to `GROUP` channels at a
/// time held in registers. Positions go in scan order, every channel of a position before the
/// next (the order the portable loops take), which keeps the reads sequential: taking 16
/// channels over the whole window at a time instead doubled the time of the seed model's first
/// pool. Masked loads and stores are slow here, so only a last, partial block uses them.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{NONE, Tiles, Window};

    /// Channels one pass over a window's positions handles: four registers.
    const GROUP: usize = 64;

    /// The 16-channel blocks of `c <= GROUP` channels: `(offset, mask)`, the last masked to the
    /// channels left.
    fn blocks(c: usize) -> impl Iterator<Item = (usize, __mmask16)> {
        (0..c).step_by(16).map(move |c0| {
            let width = (c - c0).min(16);
            (c0, (((1u32 << width) - 1) & 0xffff) as __mmask16)
        })
    }

    /// Loads the 16 channels from `p` that `k` selects (zeros elsewhere).
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load(p: *const f32, k: __mmask16) -> __m512 {
        // SAFETY: the caller bounds the lanes `k` selects; masked-off lanes are not read.
        unsafe {
            if k == 0xffff {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(k, p)
            }
        }
    }

    /// Stores the lanes of `v` that `k` selects to `p`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store_ps(p: *mut f32, k: __mmask16, v: __m512) {
        // SAFETY: the caller bounds the lanes `k` selects; masked-off lanes are not written.
        unsafe {
            if k == 0xffff {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, k, v)
            }
        }
    }

    /// See [`Window::max`]; the pointers must cover every offset it reads or writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max(
        w: Window,
        x: *const f32,
        out: *mut f32,
        argmax: *mut u16,
        relu: bool,
    ) {
        // SAFETY: as the caller promises.
        unsafe { max_at(x, out, argmax, w.offsets(), w.c, relu) }
    }

    /// See [`Tiles::max`]: its first `count` windows, each at the positions `offsets` (in scan
    /// order) past its first; the pointers must cover every offset it reads or writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn max_tiles(
        tiles: Tiles,
        count: usize,
        offsets: &[usize],
        x: *const f32,
        out: *mut f32,
        argmax: *mut u16,
        relu: bool,
    ) {
        let c = tiles.c;
        for p in 0..count {
            // SAFETY: as the caller promises.
            unsafe {
                let (x, out, argmax) = (x.add(tiles.first(p)), out.add(p * c), argmax.add(p * c));
                max_at(x, out, argmax, offsets.iter().copied(), c, relu);
            }
        }
    }

    /// The maximum of each of `c` channels over the positions `offsets` (in scan order) of
    /// `x`, into `out` and `argmax` ([`Window::max`]). Inlined into the AVX-512 entry points.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the pointers cover every offset read or written.
    #[inline(always)]
    unsafe fn max_at(
        x: *const f32,
        out: *mut f32,
        argmax: *mut u16,
        offsets: impl Iterator<Item = usize> + Clone,
        c: usize,
        relu: bool,
    ) {
        // SAFETY: as the caller promises; masked-off lanes are neither read nor written.
        unsafe {
            let (zero, none) = (_mm512_setzero_ps(), _mm512_set1_epi32(i32::from(NONE)));
            for g0 in (0..c).step_by(GROUP) {
                let c = (c - g0).min(GROUP);
                let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); GROUP / 16];
                let mut at_max = [_mm512_setzero_si512(); GROUP / 16];
                for (p, at) in offsets.clone().enumerate() {
                    let pv = _mm512_set1_epi32(p as i32);
                    for (b, (c0, k)) in blocks(c).enumerate() {
                        let v = load(x.add(at + g0 + c0), k);
                        let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, m[b])
                            | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                        m[b] = _mm512_mask_mov_ps(m[b], take, v);
                        at_max[b] = _mm512_mask_mov_epi32(at_max[b], take, pv);
                    }
                }
                for (b, (c0, k)) in blocks(c).enumerate() {
                    let i = if relu {
                        _mm512_mask_mov_epi32(
                            none,
                            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m[b], zero),
                            at_max[b],
                        )
                    } else {
                        at_max[b]
                    };
                    store_ps(out.add(g0 + c0), k, m[b]);
                    _mm512_mask_cvtepi32_storeu_epi16(argmax.add(g0 + c0).cast(), k, i);
                }
            }
        }
    }

    /// See [`Window::store`]; the pointers must cover every offset it reads or writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store(w: Window, argmax: *const u16, dy: *const f32, dx: *mut f32) {
        // SAFETY: as the caller promises.
        unsafe { store_at(argmax, dy, dx, w.offsets(), w.c) }
    }

    /// See [`Tiles::store`]: its first `count` windows, each at the positions `offsets` (in
    /// scan order) past its first; the pointers must cover every offset it reads or writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn store_tiles(
        tiles: Tiles,
        count: usize,
        offsets: &[usize],
        argmax: *const u16,
        dy: *const f32,
        dx: *mut f32,
    ) {
        let c = tiles.c;
        for p in 0..count {
            // SAFETY: as the caller promises.
            unsafe {
                let (argmax, dy, dx) = (argmax.add(p * c), dy.add(p * c), dx.add(tiles.first(p)));
                store_at(argmax, dy, dx, offsets.iter().copied(), c);
            }
        }
    }

    /// `dx` at the positions `offsets` (in scan order) of `c` channels: `0.0 + dy` where
    /// `argmax` names the position, zeros elsewhere ([`Window::store`]). Inlined into the
    /// AVX-512 entry points.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the pointers cover every offset read or written.
    #[inline(always)]
    unsafe fn store_at(
        argmax: *const u16,
        dy: *const f32,
        dx: *mut f32,
        offsets: impl Iterator<Item = usize> + Clone,
        c: usize,
    ) {
        // SAFETY: as the caller promises; masked-off lanes are neither read nor written.
        unsafe {
            let zero = _mm512_setzero_ps();
            for g0 in (0..c).step_by(GROUP) {
                let c = (c - g0).min(GROUP);
                let mut grad = [zero; GROUP / 16];
                let mut at_max = [_mm512_setzero_si512(); GROUP / 16];
                for (b, (c0, k)) in blocks(c).enumerate() {
                    let mut lanes = [NONE; 16];
                    // The copy takes the block's lanes.
                    let width = (c - c0).min(16);
                    std::ptr::copy_nonoverlapping(argmax.add(g0 + c0), lanes.as_mut_ptr(), width);
                    grad[b] = _mm512_add_ps(zero, load(dy.add(g0 + c0), k));
                    at_max[b] = _mm512_cvtepu16_epi32(_mm256_loadu_si256(lanes.as_ptr().cast()));
                }
                for (p, at) in offsets.clone().enumerate() {
                    let pv = _mm512_set1_epi32(p as i32);
                    for (b, (c0, k)) in blocks(c).enumerate() {
                        let hit = _mm512_cmpeq_epi32_mask(at_max[b], pv);
                        store_ps(dx.add(at + g0 + c0), k, _mm512_maskz_mov_ps(hit, grad[b]));
                    }
                }
            }
        }
    }
}

/// The max pool's window kernels for x86-64 with AVX2: blocks of eight channels, up to four
/// blocks held in registers across the window's positions (the caller takes the channels left
/// over). The same compares and selects as the portable loops, so the same bits.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{NONE, Window};

    /// Channels one pass over a window's positions handles: four registers.
    const GROUP: usize = 32;

    /// See [`Window::max`], for a window of whole blocks of eight channels; the pointers must
    /// cover every offset it reads or writes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn max(
        w: Window,
        x: *const f32,
        out: *mut f32,
        argmax: *mut u16,
        relu: bool,
    ) {
        let (zero, none) = (_mm256_setzero_ps(), _mm256_set1_epi32(i32::from(NONE)));
        for g0 in (0..w.c).step_by(GROUP) {
            let blocks = (w.c - g0).min(GROUP) / 8;
            let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); GROUP / 8];
            let mut at_max = [_mm256_setzero_ps(); GROUP / 8];
            for (p, at) in w.offsets().enumerate() {
                let pv = _mm256_castsi256_ps(_mm256_set1_epi32(p as i32));
                for b in 0..blocks {
                    // SAFETY: the caller bounds every position's channels.
                    let v = unsafe { _mm256_loadu_ps(x.add(at + g0 + 8 * b)) };
                    let take = _mm256_or_ps(
                        _mm256_cmp_ps::<_CMP_GT_OQ>(v, m[b]),
                        _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v),
                    );
                    m[b] = _mm256_blendv_ps(m[b], v, take);
                    at_max[b] = _mm256_blendv_ps(at_max[b], pv, take);
                }
            }
            for b in 0..blocks {
                let mut i = _mm256_castps_si256(at_max[b]);
                if relu {
                    let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(m[b], zero);
                    i = _mm256_castps_si256(_mm256_blendv_ps(
                        _mm256_castsi256_ps(none),
                        _mm256_castsi256_ps(i),
                        positive,
                    ));
                }
                let mut lanes = [0i32; 8];
                // SAFETY: `out` and `argmax` hold the block's eight values; `lanes` eight.
                unsafe {
                    _mm256_storeu_ps(out.add(g0 + 8 * b), m[b]);
                    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), i);
                    for (k, &l) in lanes.iter().enumerate() {
                        // Positions and NONE fit 16 bits (the pool refuses larger windows).
                        *argmax.add(g0 + 8 * b + k) = l as u16;
                    }
                }
            }
        }
    }

    /// See [`Window::store`], for a window of whole blocks of eight channels; the pointers must
    /// cover every offset it reads or writes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn store(w: Window, argmax: *const u16, dy: *const f32, dx: *mut f32) {
        let zero = _mm256_setzero_ps();
        for g0 in (0..w.c).step_by(GROUP) {
            let blocks = (w.c - g0).min(GROUP) / 8;
            let mut grad = [zero; GROUP / 8];
            let mut at_max = [_mm256_setzero_si256(); GROUP / 8];
            for b in 0..blocks {
                // SAFETY: `argmax` and `dy` hold the block's eight values.
                unsafe {
                    grad[b] = _mm256_add_ps(zero, _mm256_loadu_ps(dy.add(g0 + 8 * b)));
                    at_max[b] =
                        _mm256_cvtepu16_epi32(_mm_loadu_si128(argmax.add(g0 + 8 * b).cast()));
                }
            }
            for (p, at) in w.offsets().enumerate() {
                let pv = _mm256_set1_epi32(p as i32);
                for b in 0..blocks {
                    let hit = _mm256_castsi256_ps(_mm256_cmpeq_epi32(at_max[b], pv));
                    // SAFETY: the caller bounds every position's channels.
                    unsafe {
                        _mm256_storeu_ps(dx.add(at + g0 + 8 * b), _mm256_and_ps(hit, grad[b]))
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window kernels (AVX-512 where the CPU has it, and the portable loops) against the
    /// definition written out per channel: ragged channel counts, NaN, infinities, -0.0, ties.
    #[test]
    fn window_kernels_match_their_definition() {
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1.0,
            2.0,
        ];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let wides = [Wide(false), Wide::detect()];
        for c in [1, 5, 16, 17, 32, 70] {
            let (iw, ih) = (4, 3);
            let x: Vec<f32> = (0..ih * iw * c)
                .map(|i| special[(i * 7919 + c) % 13 % special.len()])
                .collect();
            let (rows, cols) = (0..3, 1..4);
            let window = Window::strided(rows.clone(), cols.clone(), iw * c, c, c);
            let positions: Vec<usize> = rows
                .flat_map(|iy| cols.clone().map(move |ix| (iy * iw + ix) * c))
                .collect();
            let (mut want_max, mut want_at) = (vec![f32::NEG_INFINITY; c], vec![0u16; c]);
            for (p, &at) in positions.iter().enumerate() {
                for ch in 0..c {
                    let v = x[at + ch];
                    if v > want_max[ch] || v.is_nan() {
                        (want_max[ch], want_at[ch]) = (v, p as u16);
                    }
                }
            }
            let dy: Vec<f32> = (0..c).map(|i| [-0.0, 1.5, -2.0][i % 3]).collect();
            for wide in wides {
                for relu in [false, true] {
                    let (mut got, mut got_at) = (vec![7.0; c], vec![7u16; c]);
                    window.max(wide, &x, &mut got, &mut got_at, relu);
                    assert_eq!(bits(&got), bits(&want_max), "max, {c} channels");
                    let want_at: Vec<u16> = want_at
                        .iter()
                        .zip(&want_max)
                        .map(|(&i, &m)| if !relu || m > 0.0 { i } else { NONE })
                        .collect();
                    assert_eq!(got_at, want_at, "argmax, {c} channels, relu {relu}");

                    let mut want = vec![9.0; x.len()];
                    for &at in &positions {
                        want[at..at + c].fill(0.0);
                    }
                    for ch in 0..c {
                        if want_at[ch] != NONE {
                            want[positions[usize::from(want_at[ch])] + ch] = 0.0 + dy[ch];
                        }
                    }
                    let mut got = vec![9.0; x.len()];
                    window.store(wide, &got_at, &dy, &mut got);
                    assert_eq!(bits(&got), bits(&want), "store, {c} channels, relu {relu}");

                    // The AVX2 kernels on the whole blocks of eight channels, whatever path
                    // `CNNC_SIMD` picks for the calls above.
                    let full = c / 8 * 8;
                    #[cfg(target_arch = "x86_64")]
                    if full > 0 && crate::simd::cpu() <= crate::simd::Simd::Avx2 {
                        let blocks = Window { c: full, ..window };
                        let (mut m, mut at) = (vec![7.0; c], vec![7u16; c]);
                        // SAFETY: the window's reads lie in `x`, `m` and `at` hold `c >= full`
                        // values, and the CPU has AVX2.
                        unsafe {
                            avx2::max(blocks, x.as_ptr(), m.as_mut_ptr(), at.as_mut_ptr(), relu)
                        };
                        assert_eq!(bits(&m[..full]), bits(&want_max[..full]), "avx2 max, {c}");
                        assert_eq!(at[..full], want_at[..full], "avx2 argmax, {c}, relu {relu}");
                        let mut got = vec![9.0; x.len()];
                        // SAFETY: as above; the writes lie in `got`.
                        unsafe { avx2::store(blocks, at.as_ptr(), dy.as_ptr(), got.as_mut_ptr()) };
                        for &p in &positions {
                            let (got, want) = (&got[p..p + full], &want[p..p + full]);
                            assert_eq!(bits(got), bits(want), "avx2 store, {c}, relu {relu}");
                        }
                    }
                }
            }
        }
    }

    /// A grid of windows gives, bit for bit, what a call a window gives: windows of 2 x 2, 3 x 2,
    /// 1 x 3 and 5 x 4 (more positions than the kernels take at once: a call a window),
    /// channels that fill the pixels or not, on every path the CPU has, with the values of the
    /// test above (NaN, infinities, -0.0, ties).
    #[test]
    fn a_grid_of_windows_is_its_windows_one_at_a_time() {
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            1.0,
            2.0,
        ];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for wide in [Wide(false), Wide::detect()] {
            for (kh, kw) in [(2, 2), (3, 2), (1, 3), (5, 4)] {
                for (c, col) in [(5, 5), (16, 16), (32, 32), (24, 32), (70, 70)] {
                    let (per_row, rows) = (3, 2);
                    let row = per_row * kw * col + 3;
                    let x: Vec<f32> = (0..rows * kh * row)
                        .map(|i| special[(i * 7919 + c) % 13 % special.len()])
                        .collect();
                    let tiles = Tiles {
                        kh,
                        kw,
                        per_row,
                        row,
                        col,
                        c,
                    };
                    let n = per_row * rows * c;
                    let dy: Vec<f32> = (0..n).map(|i| [-0.0, 1.5, -2.0][i % 3]).collect();
                    for relu in [false, true] {
                        let (mut got, mut got_at) = (vec![7.0; n], vec![7u16; n]);
                        tiles.max(wide, &x, &mut got, &mut got_at, relu);
                        let (mut dx, mut want_dx) = (vec![9.0; x.len()], vec![9.0; x.len()]);
                        tiles.store(wide, &got_at, &dy, &mut dx);
                        for p in 0..per_row * rows {
                            let (mut want, mut want_at) = (vec![7.0; c], vec![7u16; c]);
                            let window = tiles.window(p);
                            window.max(wide, &x, &mut want, &mut want_at, relu);
                            let at = p * c..(p + 1) * c;
                            let case = format!("{kh}x{kw}, {c} of {col}, window {p}, {relu}");
                            assert_eq!(bits(&got[at.clone()]), bits(&want), "max, {case}");
                            assert_eq!(got_at[at.clone()], want_at, "argmax, {case}");
                            window.store(wide, &want_at, &dy[at], &mut want_dx);
                        }
                        assert_eq!(bits(&dx), bits(&want_dx), "store, {kh}x{kw}, {c} of {col}");
                    }
                }
            }
        }
    }
}

//! Register-blocked microkernels: one MR x NR tile of C from a packed A micro-panel (kc x MR,
//! k-major) and a packed B micro-panel (kc x NR, k-major).
//!
//! The x86-64 kernels are AVX-512F, or AVX2 + FMA, through `std::arch` behind a run-time
//! check, so one binary runs on every x86-64 CPU at the speed of the one it finds (`wide`
//! picks its instruction set at compile time, which would tie the binary to the build
//! machine's CPU). Elsewhere a `wide` kernel of the same shape is used (NEON on aarch64). All
//! sum over k in order, one fused multiply-add at a time per element of C, so a tile's result
//! depends only on its inputs: never on how the work was split, nor on the instruction set
//! (AVX-512 computes each element exactly as AVX2 does, 16 lanes at once instead of 8).
//!
//! `tiles` computes P tiles that share their A panel at once: with AVX-512's 32 registers, two
//! B panels (a 6 x 32 block, 12 accumulators) keep both FMA ports busy, where one 6 x 16
//! tile (6 accumulators) leaves them waiting on the FMA latency.

pub const MR: usize = 6;
pub const NR: usize = 16;

/// How a tile is combined with what C held.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Store {
    /// C = alpha * AB (C is not read: it may hold garbage or NaN).
    Overwrite,
    /// C = C + alpha * AB.
    Accumulate,
}

/// The kernel chosen for this CPU, looked up once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isa {
    /// AVX-512F (with AVX2 and FMA, which every AVX-512 CPU has; the code paths that have no
    /// 512-bit version use those).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
    Portable,
}

impl Isa {
    /// AVX2 and FMA are usable (the AVX2 code paths may run).
    pub fn has_avx2(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx2Fma => true,
            Isa::Portable => false,
        }
    }
}

/// The best kernel for this CPU, looked up once. `FRACTALNET_NO_AVX512` and
/// `FRACTALNET_NO_AVX2` (read once per process) step down, for side-by-side timings.
pub fn isa() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::env::var_os("FRACTALNET_NO_AVX2").is_none()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            if std::env::var_os("FRACTALNET_NO_AVX512").is_none()
                && is_x86_feature_detected!("avx512f")
            {
                return Isa::Avx512;
            }
            return Isa::Avx2Fma;
        }
        Isa::Portable
    })
}

/// The ISA for the weight-gradient dot products (`dot::gemm_nt_acc`): `isa()`, except on
/// CPUs that run each 512-bit operation as two 256-bit halves (AMD Zen 4), where the AVX2
/// kernel's 4 x 3 tiles beat the 512-bit kernel's interleaved pairs (1.0-1.7x per shape,
/// 2x with a pixel tail; measured on a Zen 4 EPYC). Both give the same bits.
pub fn nt_isa() -> Isa {
    use std::sync::OnceLock;
    static NT: OnceLock<Isa> = OnceLock::new();
    *NT.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if halves_512() {
            return Isa::Avx2Fma;
        }
        isa()
    })
}

/// The AVX-512 kernels are in use on a CPU that runs each 512-bit operation as two 256-bit
/// halves (AMD Zen 4; `splits_512`), where gathers are slow too: Winograd reads its input
/// patches by masked row loads and transposes (`winograd::gather::Panel::gather_rows`)
/// instead of masked gathers (1.14x on a folded column at batch 100, measured there).
pub fn halves_512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HALVES: OnceLock<bool> = OnceLock::new();
        *HALVES.get_or_init(|| {
            isa() == Isa::Avx512 && is_x86_feature_detected!("avx512vl") && splits_512()
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The CPU is an AMD family 19h (Zen 3 / Zen 4): on those that have AVX-512 (Zen 4), a
/// 512-bit operation occupies both 256-bit pipes, so it does no more work per cycle than
/// two AVX2 ones. (Zen 5, family 1Ah, has full-width 512-bit units.)
#[cfg(target_arch = "x86_64")]
fn splits_512() -> bool {
    // CPUID leaves 0 (vendor) and 1 (family) exist on every x86_64 CPU.
    let (l0, l1) = (std::arch::x86_64::__cpuid(0), std::arch::x86_64::__cpuid(1));
    let vendor = [l0.ebx, l0.edx, l0.ecx];
    let amd = vendor
        .iter()
        .flat_map(|r| r.to_le_bytes())
        .eq(*b"AuthenticAMD");
    let base = (l1.eax >> 8) & 0xf;
    let family = if base == 0xf {
        base + ((l1.eax >> 20) & 0xff)
    } else {
        base
    };
    amd && family == 0x19
}

/// Every kernel this CPU can run, best first (for conformance tests and benches).
pub fn supported() -> Vec<Isa> {
    #[cfg(target_arch = "x86_64")]
    let simd: Vec<Isa> = {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        let avx512 = avx2 && is_x86_feature_detected!("avx512f");
        [(avx512, Isa::Avx512), (avx2, Isa::Avx2Fma)]
            .into_iter()
            .filter_map(|(has, isa)| has.then_some(isa))
            .collect()
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd: Vec<Isa> = Vec::new();
    simd.into_iter().chain([Isa::Portable]).collect()
}

/// Where a kernel reads A's MR x kc values: a(i, k) at `ptr + i * rs + k * cs`. A packed
/// panel is (rs 1, cs MR); a row-major matrix read in place is (rs = its row stride, cs 1).
#[derive(Clone, Copy)]
pub struct APanel {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl APanel {
    pub fn packed(ptr: *const f32) -> Self {
        APanel { ptr, rs: 1, cs: MR }
    }
    fn is_packed(&self) -> bool {
        self.rs == 1 && self.cs == MR
    }
}

/// Where a kernel reads B's kc x NR values: row k at `ptr + k * NR` (a packed panel, `koff`
/// null) or at `ptr + koff[k]` (read where it lies, e.g. one output row's taps in a padded
/// image: a direct convolution, no im2col copy). Each row is NR consecutive floats.
#[derive(Clone, Copy)]
pub struct BPanel {
    pub ptr: *const f32,
    pub koff: *const usize,
}

impl BPanel {
    pub fn packed(ptr: *const f32) -> Self {
        BPanel {
            ptr,
            koff: std::ptr::null(),
        }
    }
    fn is_packed(&self) -> bool {
        self.koff.is_null()
    }
}

/// tile(c, row stride rsc, unit column stride) <- alpha * A_panel B_panel (+ C).
///
/// # Safety
/// `a` addresses MR x kc readable floats; `b` addresses kc rows of NR readable floats (and
/// `b.koff`, when not null, kc readable offsets);
/// `c + i * rsc + j` is writable (and readable for `Store::Accumulate`; for `Store::Overwrite`
/// it need not be initialised: it is only written) for i < MR, j < NR;
/// `bias`, when not null, holds MR readable floats.
///
/// With a `bias`, each stored value becomes max(v + bias[i], 0) (the epilogue of a folded
/// convolution: its bias and ReLU, applied in registers), computed as `bias_relu` does.
// BLIS's microkernel signature: the panels, the tile's address and stride, and the store.
#[allow(clippy::too_many_arguments)]
#[inline]
pub unsafe fn tile(
    isa: Isa,
    kc: usize,
    a: APanel,
    b: BPanel,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    store: Store,
    bias: *const f32,
) {
    // The packed case gets its own instance with constant strides: the large-GEMM path keeps
    // exactly the code it had.
    match (isa, a.is_packed(), b.is_packed()) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx512 is only chosen when the CPU has AVX-512F; the pointer contract is
        // the caller's (a 1-panel `tiles` is one `tile`).
        (Isa::Avx512, ..) => unsafe {
            x86::tiles_512::<1>(kc, a, [b], [c], rsc, alpha, store, bias)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Avx2Fma is only chosen when the CPU has AVX2 and FMA; the pointer contract
        // is the caller's.
        (Isa::Avx2Fma, true, true) => unsafe {
            x86::tile_6x16::<true, false>(kc, a, b, c, rsc, alpha, store, bias)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2Fma, false, true) => unsafe {
            x86::tile_6x16::<false, false>(kc, a, b, c, rsc, alpha, store, bias)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2Fma, true, false) => unsafe {
            x86::tile_6x16::<true, true>(kc, a, b, c, rsc, alpha, store, bias)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        (Isa::Avx2Fma, false, false) => unsafe {
            x86::tile_6x16::<false, true>(kc, a, b, c, rsc, alpha, store, bias)
        },
        // SAFETY: the caller's pointer contract.
        (Isa::Portable, _, _) => unsafe {
            portable::tile_6x16(kc, a, b, c, rsc, alpha, store, bias)
        },
    }
}

/// P tiles that share one A panel: tile p <- alpha * A_panel B_panel[p] (+ C), at `c[p]`
/// with row stride `rsc`, each exactly as `tile` computes it (same bits).
///
/// # Safety
/// `tile`'s contract for each (a, b[p], c[p]); when B is read in place (`koff` not null),
/// every panel has the same `koff`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub unsafe fn tiles<const P: usize>(
    isa: Isa,
    kc: usize,
    a: APanel,
    b: [BPanel; P],
    c: [*mut f32; P],
    rsc: usize,
    alpha: f32,
    store: Store,
    bias: *const f32,
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        debug_assert!(b.iter().all(|p| p.koff == b[0].koff));
        // SAFETY: Avx512 is only chosen when the CPU has AVX-512F; the pointer contract is
        // the caller's.
        return unsafe { x86::tiles_512::<P>(kc, a, b, c, rsc, alpha, store, bias) };
    }
    for (b, c) in b.into_iter().zip(c) {
        // SAFETY: the caller's contract, panel by panel.
        unsafe { tile(isa, kc, a, b, c, rsc, alpha, store, bias) };
    }
}

/// How many B panels `tiles` should take at once on this ISA.
pub fn panels_per_call(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => 2,
        _ => 1,
    }
}

/// The fused epilogue's arithmetic, one definition for every path: v = max(v + b, 0), where
/// max(x, 0) is x if x > 0, else 0 (as the x86 `maxps` instruction computes it).
#[inline]
pub fn bias_relu(row: &mut [f32], b: f32) {
    for v in row {
        let s = *v + b;
        *v = if s > 0.0 { s } else { 0.0 };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{APanel, BPanel, MR, NR, Store};
    use std::arch::x86_64::*;

    /// 12 accumulators (6 rows x 2 vectors of 8), 2 B loads and one broadcast per row and k:
    /// 15 of the 16 ymm registers; 12 FMAs per k keep both FMA ports of a Zen or Intel core
    /// busy while the loads (2 + 6 broadcasts) go through the load ports.
    /// `PACKED`: A is a packed panel (constant strides 1 and MR); otherwise A's strides are
    /// read from `a`. `DIRECT`: B's rows are at `b.ptr + b.koff[k]`, else packed.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)] // the `tile` contract, unpacked
    pub unsafe fn tile_6x16<const PACKED: bool, const DIRECT: bool>(
        kc: usize,
        a: APanel,
        b: BPanel,
        c: *mut f32,
        rsc: usize,
        alpha: f32,
        store: Store,
        bias: *const f32,
    ) {
        // SAFETY (whole body): the caller guarantees MR x kc floats addressed by a, kc*NR at
        // b, an MR x NR tile at c with row stride rsc, and MR floats at a non-null bias.
        unsafe {
            let (rs, cs) = if PACKED { (1, MR) } else { (a.rs, a.cs) };
            let mut acc = [[_mm256_setzero_ps(); 2]; MR];
            let (mut pa, mut pb) = (a.ptr, b.ptr);
            for k in 0..kc {
                if DIRECT {
                    pb = b.ptr.add(*b.koff.add(k));
                }
                let b0 = _mm256_loadu_ps(pb);
                let b1 = _mm256_loadu_ps(pb.add(8));
                // unrolled by the compiler: MR is a constant, acc stays in registers
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*pa.add(i * rs));
                    row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
                }
                pa = pa.add(cs);
                if !DIRECT {
                    pb = pb.add(NR);
                }
            }
            let va = _mm256_set1_ps(alpha);
            for (i, row) in acc.iter().enumerate() {
                let pc = c.add(i * rsc);
                for (h, v) in row.iter().enumerate() {
                    let p = pc.add(8 * h);
                    let mut r = match store {
                        Store::Overwrite => _mm256_mul_ps(*v, va),
                        Store::Accumulate => _mm256_fmadd_ps(*v, va, _mm256_loadu_ps(p)),
                    };
                    if !bias.is_null() {
                        // max(x, 0) returns its second operand, 0, unless x > 0: `bias_relu`
                        let s = _mm256_add_ps(r, _mm256_set1_ps(*bias.add(i)));
                        r = _mm256_max_ps(s, _mm256_setzero_ps());
                    }
                    _mm256_storeu_ps(p, r);
                }
            }
        }
    }

    /// P panels of 16 columns at once, one zmm per row and panel: 6 x P accumulators, P B
    /// loads and 6 broadcasts per k. Each element is the AVX2 kernel's chain of FMAs over k,
    /// in the same order, and the same store arithmetic: the same bits.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)] // the `tiles` contract, unpacked
    pub unsafe fn tiles_512<const P: usize>(
        kc: usize,
        a: APanel,
        b: [BPanel; P],
        c: [*mut f32; P],
        rsc: usize,
        alpha: f32,
        store: Store,
        bias: *const f32,
    ) {
        // the A and B read patterns as constants, so the loop carries no stride registers
        // SAFETY: the `tiles` contract, passed on.
        unsafe {
            match (a.is_packed(), b[0].is_packed()) {
                (true, true) => tiles_512_k::<P, true, false>(kc, a, b, c, rsc, alpha, store, bias),
                (false, true) => {
                    tiles_512_k::<P, false, false>(kc, a, b, c, rsc, alpha, store, bias)
                }
                (true, false) => tiles_512_k::<P, true, true>(kc, a, b, c, rsc, alpha, store, bias),
                (false, false) => {
                    tiles_512_k::<P, false, true>(kc, a, b, c, rsc, alpha, store, bias)
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)] // the `tiles` contract, unpacked
    unsafe fn tiles_512_k<const P: usize, const PACKED: bool, const DIRECT: bool>(
        kc: usize,
        a: APanel,
        b: [BPanel; P],
        c: [*mut f32; P],
        rsc: usize,
        alpha: f32,
        store: Store,
        bias: *const f32,
    ) {
        // SAFETY (whole body): the caller guarantees MR x kc floats addressed by a, kc rows
        // of NR floats per B panel, an MR x NR tile at each c[p] with row stride rsc, and MR
        // floats at a non-null bias.
        unsafe {
            let (rs, cs) = if PACKED { (1, MR) } else { (a.rs, a.cs) };
            let mut acc = [[_mm512_setzero_ps(); P]; MR];
            let mut pa = a.ptr;
            let koff = b[0].koff;
            for k in 0..kc {
                let bv: [__m512; P] = if DIRECT {
                    let o = *koff.add(k);
                    std::array::from_fn(|p| _mm512_loadu_ps(b[p].ptr.add(o)))
                } else {
                    std::array::from_fn(|p| _mm512_loadu_ps(b[p].ptr.add(k * NR)))
                };
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = _mm512_set1_ps(*pa.add(i * rs));
                    for (v, bp) in row.iter_mut().zip(&bv) {
                        *v = _mm512_fmadd_ps(ai, *bp, *v);
                    }
                }
                pa = pa.add(cs);
            }
            let va = _mm512_set1_ps(alpha);
            for (i, row) in acc.iter().enumerate() {
                for (v, cp) in row.iter().zip(&c) {
                    let p = cp.add(i * rsc);
                    let mut r = match store {
                        Store::Overwrite => _mm512_mul_ps(*v, va),
                        Store::Accumulate => _mm512_fmadd_ps(*v, va, _mm512_loadu_ps(p)),
                    };
                    if !bias.is_null() {
                        // as the AVX2 kernel: max(s, 0) is 0 unless s > 0 (`bias_relu`)
                        let s = _mm512_add_ps(r, _mm512_set1_ps(*bias.add(i)));
                        r = _mm512_max_ps(s, _mm512_setzero_ps());
                    }
                    _mm512_storeu_ps(p, r);
                }
            }
        }
    }
}

mod portable {
    use super::{APanel, BPanel, MR, NR, Store};
    use wide::f32x8;

    #[allow(clippy::too_many_arguments)] // the `tile` contract, unpacked
    pub unsafe fn tile_6x16(
        kc: usize,
        a: APanel,
        b: BPanel,
        c: *mut f32,
        rsc: usize,
        alpha: f32,
        store: Store,
        bias: *const f32,
    ) {
        // SAFETY (whole body): as for the x86 kernel.
        unsafe {
            let mut acc = [[f32x8::ZERO; 2]; MR];
            for k in 0..kc {
                let off = if b.is_packed() {
                    k * NR
                } else {
                    *b.koff.add(k)
                };
                let bk = std::slice::from_raw_parts(b.ptr.add(off), NR);
                let b0 = f32x8::from(<[f32; 8]>::try_from(&bk[..8]).unwrap_or_default());
                let b1 = f32x8::from(<[f32; 8]>::try_from(&bk[8..]).unwrap_or_default());
                for (i, row) in acc.iter_mut().enumerate() {
                    let ai = f32x8::splat(*a.ptr.add(i * a.rs + k * a.cs));
                    row[0] = ai.mul_add(b0, row[0]);
                    row[1] = ai.mul_add(b1, row[1]);
                }
            }
            let va = f32x8::splat(alpha);
            for (i, row) in acc.iter().enumerate() {
                for (h, v) in row.iter().enumerate() {
                    // through the pointer: with `Store::Overwrite` C may be uninitialised
                    let dst = c.add(i * rsc + 8 * h);
                    let r = match store {
                        Store::Overwrite => *v * va,
                        Store::Accumulate => {
                            v.mul_add(va, f32x8::from(dst.cast::<[f32; 8]>().read_unaligned()))
                        }
                    };
                    let mut r = r.to_array();
                    if !bias.is_null() {
                        super::bias_relu(&mut r, *bias.add(i));
                    }
                    dst.cast::<[f32; 8]>().write_unaligned(r);
                }
            }
        }
    }
}

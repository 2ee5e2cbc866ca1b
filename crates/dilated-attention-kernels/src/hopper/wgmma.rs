//! Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a) through inline PTX: CubeCL 0.11 has no
//! intrinsic for it, so each product is one `gpu_asm!` block.
//!
//! A warpgroup (4 planes, 128 units) computes `D[64, 64] (+)= A[64, 16·steps] · B[16·steps, 64]`
//! in f32 from f16/bf16 operands. `B` always comes from shared memory through a 64-bit matrix
//! descriptor; `A` from shared memory too ([`mma_ss`](fn@mma_ss)) or from registers ([`mma_rs`](fn@mma_rs), how
//! attention feeds `P` into `P·V` without a trip through shared memory).
//!
//! Register layout (PTX's, the same as `mma.sync`'s per plane): plane `w` of the warpgroup
//! holds rows `16w..16w + 16`; lane `4g + t` holds, for each 8-column tile `j`, accumulator
//! registers `4j..4j + 4` = `(g, 8j + 2t)`, `(g, 8j + 2t + 1)`, `(g + 8, 8j + 2t)`,
//! `(g + 8, 8j + 2t + 1)`: 32 f32 per unit for 64 columns. An `A` fragment of a 16-wide k-step
//! `s` is four `u32` (two halves each): rows `g`, `g + 8` at columns `16s + 2t` and
//! `16s + 8 + 2t` — the accumulators of column tiles `2s`, `2s + 1`, rounded.
//!
//! Shared tiles use the 128-byte swizzled layout ([`swizzled`](fn@swizzled), the layout TMA
//! writes with `SWIZZLE_128B`): a tile is cut into panels of 64 columns (128 bytes of f16/bf16);
//! in a panel, row `r` is 128 contiguous bytes at `r · 128`, and its 16-byte vector `c` sits at
//! position `c ^ (r % 8)`. Eight rows make a 1024-byte swizzle atom, so tiles and panels start
//! 1024-aligned. A descriptor ([`k_major`](fn@k_major), [`mn_major`](fn@mn_major)) names the
//! start, the swizzle mode and the stride between atoms (1024 bytes: the next eight rows): a
//! K-major operand (the contraction runs along the rows, as for `Q` and `K` in `Q·Kᵀ`) steps
//! 32 bytes within a row per 16-wide k-step and a panel per four; an MN-major one (`V` in
//! `P·V`: keys are K and the tile's rows, the head dim is N, `trans-b = 1`) steps 16 rows. A
//! warp copies a row as eight 16-byte vectors, which land in eight different bank groups.
//! Writes into these tiles go through the generic proxy, so a `fence.proxy.async`
//! (`sync_async_proxy_shared`) and a barrier must come between the last write and the first
//! product that reads them.
//!
//! Each call issues its products, commits them as one group and waits for them
//! (`wgmma.wait_group 0`): the accumulators are ordinary registers again when it returns. A
//! product marked `in_flight` returns without the wait; `super::pipelined` settles it later,
//! which lets a warpgroup run its softmax while its own products are in the tensor cores.

use cubecl::prelude::*;

use super::ptx::{Operand, narrow_pair_ptx, pair_ptx, product_ptx};
use super::query_tile::ROWS;
use crate::sm80::mma::CHUNK;

/// Accumulator registers per unit of a 64×64 f32 tile.
pub(crate) type Acc = Const<32>;
/// `A` fragment registers per unit for up to four 16-wide k-steps (4 `u32` each).
pub(crate) type Frags = Const<16>;
/// Accumulator registers per unit of two 64×64 f32 tiles (a pair of products issued together:
/// the first tile in elements `0..32`, the second in `32..64`).
pub(crate) type Acc2 = Const<64>;

/// Bytes of one row of a panel: 64 f16/bf16 columns.
pub(crate) const PANEL_ROW: usize = 128;
/// Bytes of a swizzle atom: eight panel rows.
pub(crate) const ATOM: u32 = 1024;

/// Index, in 16-byte vectors, of row `r`'s vector column `c` (columns `8c..8c + 8`) in a
/// `rows`-row tile in the 128-byte swizzled layout.
#[cube]
pub(crate) fn swizzled(r: usize, c: usize, #[comptime] rows: usize) -> usize {
    (c / 8) * comptime!(rows * 8) + r * 8 + ((c % 8) ^ (r % 8))
}

/// Address of `tile[0]` in the shared window (what descriptors and `.shared` instructions take).
#[cube]
pub(crate) fn shared_address<E: CubePrimitive>(tile: &[E]) -> u32 {
    let ptr = unsafe { tile.as_ptr_unchecked() };
    let out: u32;
    gpu_asm!(
        "{{ .reg .u64 t; cvta.to.shared.u64 t, {p}; cvt.u32.u64 {o}, t; }}",
        o = out(_) out,
        p = in(_) ptr,
        options(pure, nomem),
    );
    out
}

/// The descriptor of a K-major operand whose first row starts at `address` (1024-aligned, or
/// 32 bytes a k-step past it): 128-byte swizzle, eight-row atoms `ATOM` bytes apart (the
/// leading offset is unused for K-major swizzled operands; 16 by convention).
///
/// Computed in plain CubeCL, not PTX: the result of a `gpu_asm!` block is a late-initialised
/// local, which CubeCL hands to a later block as a pointer to it — a 64-bit value that passes
/// the `l` constraint of a descriptor and faults at run time.
#[cube]
pub(crate) fn k_major(address: u32) -> u64 {
    descriptor(address, 16u32)
}

/// The descriptor of an MN-major operand (`trans-b`) whose first row starts at `address`
/// (1024-aligned): 128-byte swizzle, eight-row atoms (along K) `ATOM` bytes apart. A product
/// is 64 wide in N, one panel, so the leading offset (between panels along N) is never used;
/// it is set to `ATOM` as well.
#[cube]
pub(crate) fn mn_major(address: u32) -> u64 {
    descriptor(address, ATOM)
}

/// A 128-byte-swizzle descriptor: start `address`, leading byte offset `lbo`, stride byte offset
/// `ATOM`, base offset 0, layout type 1 (bits 62–63).
#[cube]
fn descriptor(address: u32, #[comptime] lbo: u32) -> u64 {
    let lo = ((address & 0x3FFFFu32) >> 4u32) | comptime!((lbo >> 4) << 16);
    let hi = comptime!((ATOM >> 4) | (1u32 << 30));
    u64::cast_from(lo) | (u64::cast_from(hi) << 32u64)
}

/// What one warpgroup product does, fixed when the kernel is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Product {
    /// `bf16` operands (else f16).
    pub bf16: bool,
    /// 16-wide k-steps issued by the call (at most 8: two panels of a K-major operand).
    pub steps: u32,
    /// Bytes between the 64-column panels of a K-major shared `A` (its rows · 128); 0 for a
    /// register `A`.
    pub a_panel: u32,
    /// Bytes between the 64-column panels of a K-major `B`; unused when `B` is MN-major.
    pub b_panel: u32,
    /// `B` is MN-major (`trans-b`): `V` in `P·V`.
    pub b_transposed: bool,
    /// The call commits its products as one group and returns without waiting for them: the
    /// result registers fill in later and are read only through `super::pipelined`'s settle
    /// calls (a `wgmma.wait_group` first).
    pub in_flight: bool,
}

impl Product {
    /// Over the head dim, `A` a warpgroup's rows of a cube's `ROWS`-row tile and `B` a ring
    /// stage, both K-major in shared memory: `S = Q·Kᵀ`, `dP = dO·Vᵀ`, `Sᵀ`, `dPᵀ`.
    pub(crate) fn over_head_dim(bf16: bool, head_dim: usize) -> Product {
        Product {
            bf16,
            steps: (head_dim / 16) as u32,
            a_panel: (ROWS * PANEL_ROW) as u32,
            b_panel: (CHUNK * PANEL_ROW) as u32,
            b_transposed: false,
            in_flight: false,
        }
    }

    /// Over a stage's `CHUNK` rows, `A` from registers, `B` MN-major: `P·V`, `dS·K`, `Pᵀ·dO`.
    pub(crate) fn over_chunk(bf16: bool) -> Product {
        Product {
            bf16,
            steps: (CHUNK / 16) as u32,
            a_panel: 0,
            b_panel: 0,
            b_transposed: true,
            in_flight: false,
        }
    }
}

// Every input is a scalar: CubeCL passes a vector input to inline PTX as a pointer to its
// storage (where the vector is a mutable or late-initialised local), so the accumulators and
// fragments go in element by element, one PTX register each, numbered as `product_ptx` expects.
// The one output (CubeCL allows one) is the accumulator vector.

/// `D = A·B`, `A` and `B` in shared memory (descriptors `da`, `db` of the first k-step).
#[cube]
pub(crate) fn mma_ss(da: u64, db: u64, #[comptime] product: Product) -> Vector<f32, Acc> {
    let text = comptime!(product_ptx(product, Operand::Shared, false, 1));
    let out: Vector<f32, Acc>;
    gpu_asm!(
        "{text}",
        "// {d} {a} {b}",
        d = out(_) out,
        a = in(_) da,
        b = in(_) db,
    );
    out
}
/// `D = C + A·B`, `A` and `B` in shared memory (descriptors `da`, `db` of the first k-step).
#[cube]
pub(crate) fn mma_ss_add(
    c: Vector<f32, Acc>,
    da: u64,
    db: u64,
    #[comptime] product: Product,
) -> Vector<f32, Acc> {
    let text = comptime!(product_ptx(product, Operand::Shared, true, 33));
    let out: Vector<f32, Acc>;
    gpu_asm!(
        "{text}",
        "// {d} {c0} {c1} {c2} {c3} {c4} {c5} {c6} {c7} {c8} {c9} {c10} {c11} {c12} {c13} {c14} {c15} {c16} {c17} {c18} {c19} {c20} {c21} {c22} {c23} {c24} {c25} {c26} {c27} {c28} {c29} {c30} {c31} {a} {b}",
        d = out(_) out,
        c0 = in(_) c.extract(0usize),
        c1 = in(_) c.extract(1usize),
        c2 = in(_) c.extract(2usize),
        c3 = in(_) c.extract(3usize),
        c4 = in(_) c.extract(4usize),
        c5 = in(_) c.extract(5usize),
        c6 = in(_) c.extract(6usize),
        c7 = in(_) c.extract(7usize),
        c8 = in(_) c.extract(8usize),
        c9 = in(_) c.extract(9usize),
        c10 = in(_) c.extract(10usize),
        c11 = in(_) c.extract(11usize),
        c12 = in(_) c.extract(12usize),
        c13 = in(_) c.extract(13usize),
        c14 = in(_) c.extract(14usize),
        c15 = in(_) c.extract(15usize),
        c16 = in(_) c.extract(16usize),
        c17 = in(_) c.extract(17usize),
        c18 = in(_) c.extract(18usize),
        c19 = in(_) c.extract(19usize),
        c20 = in(_) c.extract(20usize),
        c21 = in(_) c.extract(21usize),
        c22 = in(_) c.extract(22usize),
        c23 = in(_) c.extract(23usize),
        c24 = in(_) c.extract(24usize),
        c25 = in(_) c.extract(25usize),
        c26 = in(_) c.extract(26usize),
        c27 = in(_) c.extract(27usize),
        c28 = in(_) c.extract(28usize),
        c29 = in(_) c.extract(29usize),
        c30 = in(_) c.extract(30usize),
        c31 = in(_) c.extract(31usize),
        a = in(_) da,
        b = in(_) db,
    );
    out
}
/// `D = A·B`, `A` from registers (`a`: four `u32` per k-step, at most four steps), `B` in
/// shared memory (descriptor `db` of the first k-step).
#[cube]
pub(crate) fn mma_rs(
    a: Vector<u32, Frags>,
    db: u64,
    #[comptime] product: Product,
) -> Vector<f32, Acc> {
    let text = comptime!(product_ptx(product, Operand::Registers, false, 16));
    let out: Vector<f32, Acc>;
    gpu_asm!(
        "{text}",
        "// {d} {f0} {f1} {f2} {f3} {f4} {f5} {f6} {f7} {f8} {f9} {f10} {f11} {f12} {f13} {f14} {f15} {b}",
        d = out(_) out,
        f0 = in(_) a.extract(0usize),
        f1 = in(_) a.extract(1usize),
        f2 = in(_) a.extract(2usize),
        f3 = in(_) a.extract(3usize),
        f4 = in(_) a.extract(4usize),
        f5 = in(_) a.extract(5usize),
        f6 = in(_) a.extract(6usize),
        f7 = in(_) a.extract(7usize),
        f8 = in(_) a.extract(8usize),
        f9 = in(_) a.extract(9usize),
        f10 = in(_) a.extract(10usize),
        f11 = in(_) a.extract(11usize),
        f12 = in(_) a.extract(12usize),
        f13 = in(_) a.extract(13usize),
        f14 = in(_) a.extract(14usize),
        f15 = in(_) a.extract(15usize),
        b = in(_) db,
    );
    out
}
/// `D = C + A·B`, `A` from registers (`a`: four `u32` per k-step, at most four steps), `B`
/// in shared memory (descriptor `db` of the first k-step).
#[cube]
pub(crate) fn mma_rs_add(
    c: Vector<f32, Acc>,
    a: Vector<u32, Frags>,
    db: u64,
    #[comptime] product: Product,
) -> Vector<f32, Acc> {
    let text = comptime!(product_ptx(product, Operand::Registers, true, 48));
    let out: Vector<f32, Acc>;
    gpu_asm!(
        "{text}",
        "// {d} {c0} {c1} {c2} {c3} {c4} {c5} {c6} {c7} {c8} {c9} {c10} {c11} {c12} {c13} {c14} {c15} {c16} {c17} {c18} {c19} {c20} {c21} {c22} {c23} {c24} {c25} {c26} {c27} {c28} {c29} {c30} {c31} {f0} {f1} {f2} {f3} {f4} {f5} {f6} {f7} {f8} {f9} {f10} {f11} {f12} {f13} {f14} {f15} {b}",
        d = out(_) out,
        c0 = in(_) c.extract(0usize),
        c1 = in(_) c.extract(1usize),
        c2 = in(_) c.extract(2usize),
        c3 = in(_) c.extract(3usize),
        c4 = in(_) c.extract(4usize),
        c5 = in(_) c.extract(5usize),
        c6 = in(_) c.extract(6usize),
        c7 = in(_) c.extract(7usize),
        c8 = in(_) c.extract(8usize),
        c9 = in(_) c.extract(9usize),
        c10 = in(_) c.extract(10usize),
        c11 = in(_) c.extract(11usize),
        c12 = in(_) c.extract(12usize),
        c13 = in(_) c.extract(13usize),
        c14 = in(_) c.extract(14usize),
        c15 = in(_) c.extract(15usize),
        c16 = in(_) c.extract(16usize),
        c17 = in(_) c.extract(17usize),
        c18 = in(_) c.extract(18usize),
        c19 = in(_) c.extract(19usize),
        c20 = in(_) c.extract(20usize),
        c21 = in(_) c.extract(21usize),
        c22 = in(_) c.extract(22usize),
        c23 = in(_) c.extract(23usize),
        c24 = in(_) c.extract(24usize),
        c25 = in(_) c.extract(25usize),
        c26 = in(_) c.extract(26usize),
        c27 = in(_) c.extract(27usize),
        c28 = in(_) c.extract(28usize),
        c29 = in(_) c.extract(29usize),
        c30 = in(_) c.extract(30usize),
        c31 = in(_) c.extract(31usize),
        f0 = in(_) a.extract(0usize),
        f1 = in(_) a.extract(1usize),
        f2 = in(_) a.extract(2usize),
        f3 = in(_) a.extract(3usize),
        f4 = in(_) a.extract(4usize),
        f5 = in(_) a.extract(5usize),
        f6 = in(_) a.extract(6usize),
        f7 = in(_) a.extract(7usize),
        f8 = in(_) a.extract(8usize),
        f9 = in(_) a.extract(9usize),
        f10 = in(_) a.extract(10usize),
        f11 = in(_) a.extract(11usize),
        f12 = in(_) a.extract(12usize),
        f13 = in(_) a.extract(13usize),
        f14 = in(_) a.extract(14usize),
        f15 = in(_) a.extract(15usize),
        b = in(_) db,
    );
    out
}
/// `(D₀, D₁) = (A₀·B₀, A₁·B₁)`, all four operands in shared memory (descriptors of the first
/// k-step), issued together and waited for once: `D₀` in elements `0..32`, `D₁` in `32..64`.
#[cube]
pub(crate) fn mma_ss_pair(
    da0: u64,
    db0: u64,
    da1: u64,
    db1: u64,
    #[comptime] product: Product,
) -> Vector<f32, Acc2> {
    let text = comptime!(pair_ptx(product, Operand::Shared));
    let out: Vector<f32, Acc2>;
    gpu_asm!(
        "{text}",
        "// {d} {a0} {b0} {a1} {b1}",
        d = out(_) out,
        a0 = in(_) da0,
        b0 = in(_) db0,
        a1 = in(_) da1,
        b1 = in(_) db1,
    );
    out
}
/// `(D₀, D₁) = (A₀·B₀, A₁·B₁)` for narrow products (`D[64, 32]`, `B` 32 wide in N), all four
/// operands in shared memory, issued together and waited for once: `D₀` in elements `0..16`
/// (column tiles 0–3 in [`super::tiles::tiles_assign`]'s renaming), `D₁` in `16..32` (tiles
/// 4–7).
#[cube]
pub(crate) fn mma_ss_pair_narrow(
    da0: u64,
    db0: u64,
    da1: u64,
    db1: u64,
    #[comptime] product: Product,
) -> Vector<f32, Acc> {
    let text = comptime!(narrow_pair_ptx(product));
    let out: Vector<f32, Acc>;
    gpu_asm!(
        "{text}",
        "// {d} {a0} {b0} {a1} {b1}",
        d = out(_) out,
        a0 = in(_) da0,
        b0 = in(_) db0,
        a1 = in(_) da1,
        b1 = in(_) db1,
    );
    out
}
/// `(D₀, D₁) = (C₀ + A₀·B₀, C₁ + A₁·B₁)`, `A₀`, `A₁` from registers (four `u32` per k-step),
/// `B₀`, `B₁` in shared memory, issued together and waited for once: `D₀` in elements `0..32`,
/// `D₁` in `32..64`.
#[cube]
pub(crate) fn mma_rs_add_pair(
    c0: Vector<f32, Acc>,
    a0: Vector<u32, Frags>,
    db0: u64,
    c1: Vector<f32, Acc>,
    a1: Vector<u32, Frags>,
    db1: u64,
    #[comptime] product: Product,
) -> Vector<f32, Acc2> {
    let text = comptime!(pair_ptx(product, Operand::Registers));
    let out: Vector<f32, Acc2>;
    gpu_asm!(
        "{text}",
        "// {d} {c0_0} {c0_1} {c0_2} {c0_3} {c0_4} {c0_5} {c0_6} {c0_7} {c0_8} {c0_9} {c0_10} {c0_11} {c0_12} {c0_13} {c0_14} {c0_15} {c0_16} {c0_17} {c0_18} {c0_19} {c0_20} {c0_21} {c0_22} {c0_23} {c0_24} {c0_25} {c0_26} {c0_27} {c0_28} {c0_29} {c0_30} {c0_31} {c1_0} {c1_1} {c1_2} {c1_3} {c1_4} {c1_5} {c1_6} {c1_7} {c1_8} {c1_9} {c1_10} {c1_11} {c1_12} {c1_13} {c1_14} {c1_15} {c1_16} {c1_17} {c1_18} {c1_19} {c1_20} {c1_21} {c1_22} {c1_23} {c1_24} {c1_25} {c1_26} {c1_27} {c1_28} {c1_29} {c1_30} {c1_31} {f0_0} {f0_1} {f0_2} {f0_3} {f0_4} {f0_5} {f0_6} {f0_7} {f0_8} {f0_9} {f0_10} {f0_11} {f0_12} {f0_13} {f0_14} {f0_15} {f1_0} {f1_1} {f1_2} {f1_3} {f1_4} {f1_5} {f1_6} {f1_7} {f1_8} {f1_9} {f1_10} {f1_11} {f1_12} {f1_13} {f1_14} {f1_15} {b0} {b1}",
        d = out(_) out,
        c0_0 = in(_) c0.extract(0usize),
        c0_1 = in(_) c0.extract(1usize),
        c0_2 = in(_) c0.extract(2usize),
        c0_3 = in(_) c0.extract(3usize),
        c0_4 = in(_) c0.extract(4usize),
        c0_5 = in(_) c0.extract(5usize),
        c0_6 = in(_) c0.extract(6usize),
        c0_7 = in(_) c0.extract(7usize),
        c0_8 = in(_) c0.extract(8usize),
        c0_9 = in(_) c0.extract(9usize),
        c0_10 = in(_) c0.extract(10usize),
        c0_11 = in(_) c0.extract(11usize),
        c0_12 = in(_) c0.extract(12usize),
        c0_13 = in(_) c0.extract(13usize),
        c0_14 = in(_) c0.extract(14usize),
        c0_15 = in(_) c0.extract(15usize),
        c0_16 = in(_) c0.extract(16usize),
        c0_17 = in(_) c0.extract(17usize),
        c0_18 = in(_) c0.extract(18usize),
        c0_19 = in(_) c0.extract(19usize),
        c0_20 = in(_) c0.extract(20usize),
        c0_21 = in(_) c0.extract(21usize),
        c0_22 = in(_) c0.extract(22usize),
        c0_23 = in(_) c0.extract(23usize),
        c0_24 = in(_) c0.extract(24usize),
        c0_25 = in(_) c0.extract(25usize),
        c0_26 = in(_) c0.extract(26usize),
        c0_27 = in(_) c0.extract(27usize),
        c0_28 = in(_) c0.extract(28usize),
        c0_29 = in(_) c0.extract(29usize),
        c0_30 = in(_) c0.extract(30usize),
        c0_31 = in(_) c0.extract(31usize),
        c1_0 = in(_) c1.extract(0usize),
        c1_1 = in(_) c1.extract(1usize),
        c1_2 = in(_) c1.extract(2usize),
        c1_3 = in(_) c1.extract(3usize),
        c1_4 = in(_) c1.extract(4usize),
        c1_5 = in(_) c1.extract(5usize),
        c1_6 = in(_) c1.extract(6usize),
        c1_7 = in(_) c1.extract(7usize),
        c1_8 = in(_) c1.extract(8usize),
        c1_9 = in(_) c1.extract(9usize),
        c1_10 = in(_) c1.extract(10usize),
        c1_11 = in(_) c1.extract(11usize),
        c1_12 = in(_) c1.extract(12usize),
        c1_13 = in(_) c1.extract(13usize),
        c1_14 = in(_) c1.extract(14usize),
        c1_15 = in(_) c1.extract(15usize),
        c1_16 = in(_) c1.extract(16usize),
        c1_17 = in(_) c1.extract(17usize),
        c1_18 = in(_) c1.extract(18usize),
        c1_19 = in(_) c1.extract(19usize),
        c1_20 = in(_) c1.extract(20usize),
        c1_21 = in(_) c1.extract(21usize),
        c1_22 = in(_) c1.extract(22usize),
        c1_23 = in(_) c1.extract(23usize),
        c1_24 = in(_) c1.extract(24usize),
        c1_25 = in(_) c1.extract(25usize),
        c1_26 = in(_) c1.extract(26usize),
        c1_27 = in(_) c1.extract(27usize),
        c1_28 = in(_) c1.extract(28usize),
        c1_29 = in(_) c1.extract(29usize),
        c1_30 = in(_) c1.extract(30usize),
        c1_31 = in(_) c1.extract(31usize),
        f0_0 = in(_) a0.extract(0usize),
        f0_1 = in(_) a0.extract(1usize),
        f0_2 = in(_) a0.extract(2usize),
        f0_3 = in(_) a0.extract(3usize),
        f0_4 = in(_) a0.extract(4usize),
        f0_5 = in(_) a0.extract(5usize),
        f0_6 = in(_) a0.extract(6usize),
        f0_7 = in(_) a0.extract(7usize),
        f0_8 = in(_) a0.extract(8usize),
        f0_9 = in(_) a0.extract(9usize),
        f0_10 = in(_) a0.extract(10usize),
        f0_11 = in(_) a0.extract(11usize),
        f0_12 = in(_) a0.extract(12usize),
        f0_13 = in(_) a0.extract(13usize),
        f0_14 = in(_) a0.extract(14usize),
        f0_15 = in(_) a0.extract(15usize),
        f1_0 = in(_) a1.extract(0usize),
        f1_1 = in(_) a1.extract(1usize),
        f1_2 = in(_) a1.extract(2usize),
        f1_3 = in(_) a1.extract(3usize),
        f1_4 = in(_) a1.extract(4usize),
        f1_5 = in(_) a1.extract(5usize),
        f1_6 = in(_) a1.extract(6usize),
        f1_7 = in(_) a1.extract(7usize),
        f1_8 = in(_) a1.extract(8usize),
        f1_9 = in(_) a1.extract(9usize),
        f1_10 = in(_) a1.extract(10usize),
        f1_11 = in(_) a1.extract(11usize),
        f1_12 = in(_) a1.extract(12usize),
        f1_13 = in(_) a1.extract(13usize),
        f1_14 = in(_) a1.extract(14usize),
        f1_15 = in(_) a1.extract(15usize),
        b0 = in(_) db0,
        b1 = in(_) db1,
    );
    out
}
/// Tile `k` (0 or 1) of a pair's results.
#[cube]
pub(crate) fn half_of(x: Vector<f32, Acc2>, #[comptime] k: usize) -> Vector<f32, Acc> {
    let mut h = Vector::<f32, Acc>::new(0.0f32);
    #[unroll]
    for i in 0..32usize {
        h.insert(i, x.extract(comptime!(32 * k + i)));
    }
    h
}

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
//! Shared tiles use the no-swizzle canonical layout ([`core_offset`](fn@core_offset)): 8×8 "core matrices" of
//! 128 contiguous bytes, core `(r / 8, c / 8)` of a `rows × cols` tile at
//! `((c / 8) · rows / 8 + r / 8) · 128` bytes. A descriptor names the start and two strides: for
//! a K-major operand (the contraction runs along the tile's columns, as for `Q` and `K` in
//! `Q·Kᵀ`) the leading byte offset steps along K (`rows · 16` bytes here) and the stride byte
//! offset along M/N (128); for an MN-major operand (`V` in `P·V`: keys are K, the head dim is
//! N, `trans-b = 1`) the leading offset steps along K — the tile's rows, 128 bytes — and the
//! stride offset along N (`rows · 16`). Writes into these tiles go through the generic proxy,
//! so a `fence.proxy.async` (`sync_async_proxy_shared`) and a cube barrier must come between
//! the last write and the first product that reads them.
//!
//! Each call issues its products, commits them and waits for them (`wgmma.wait_group 0`): the
//! accumulators are ordinary registers again when it returns. Overlapping products with the
//! softmax is the job of a second warpgroup, not of this block.

use cubecl::prelude::*;

/// Accumulator registers per unit of a 64×64 f32 tile.
pub(crate) type Acc = Const<32>;
/// `A` fragment registers per unit for up to four 16-wide k-steps (4 `u32` each).
pub(crate) type Frags = Const<16>;

/// Element offset of `(r, c)` in a `rows`-row tile in the no-swizzle canonical layout.
#[cube]
pub(crate) fn core_offset(r: usize, c: usize, #[comptime] rows: usize) -> usize {
    ((c / 8) * comptime!(rows / 8) + r / 8) * 64 + (r % 8) * 8 + c % 8
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

/// A no-swizzle shared-memory matrix descriptor: start `address` (bytes, 16-aligned), leading
/// and stride byte offsets `lbo`, `sbo` (multiples of 16 below 2^18).
///
/// Computed in plain CubeCL, not PTX: the result of a `gpu_asm!` block is a late-initialised
/// local, which CubeCL hands to a later block as a pointer to it — a 64-bit value that passes
/// the `l` constraint of a descriptor and faults at run time.
#[cube]
pub(crate) fn descriptor(address: u32, #[comptime] lbo: u32, #[comptime] sbo: u32) -> u64 {
    let lo = ((address & 0x3FFFFu32) >> 4u32) | comptime!((lbo >> 4) << 16);
    u64::cast_from(lo) | (u64::cast_from(comptime!(sbo >> 4)) << 32u64)
}

/// What one warpgroup product does, fixed when the kernel is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Product {
    /// `bf16` operands (else f16).
    pub bf16: bool,
    /// 16-wide k-steps issued by the call (1–4).
    pub steps: u32,
    /// Bytes the `A` descriptor advances per k-step (shared-memory `A` only).
    pub a_step: u32,
    /// Bytes the `B` descriptor advances per k-step.
    pub b_step: u32,
    /// `B` is MN-major (`trans-b`): `V` in `P·V`.
    pub b_transposed: bool,
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
/// Where the `A` operand of a product lives.
#[derive(Clone, Copy)]
enum Operand {
    Shared,
    Registers,
}

/// The PTX of one call. Operands are numbered as CubeCL lowers them: the result first (PTX
/// registers `%0..%32`), then the inputs in order (the 32 accumulator inputs when adding, the 16
/// fragment registers of a register `A`, the descriptors); `first` is the operand index of the
/// `A` descriptor, or the one before the `B` descriptor for a register `A`.
fn product_ptx(p: Product, a: Operand, accumulate: bool, first: usize) -> String {
    let ty = if p.bf16 { "bf16" } else { "f16" };
    let acc_regs = 32;
    let mut s =
        String::from("{\n.reg .pred p;\n.reg .b64 da, db;\n.reg .b32 one;\nmov.b32 one, 1;\n");
    // The accumulator input lives in registers %32..%64; the product writes %0..%32.
    if accumulate {
        for i in 0..acc_regs {
            s += &format!("mov.b32 %{i}, %{};\n", acc_regs + i);
        }
    }
    s += "wgmma.fence.sync.aligned;\n";
    // PTX register index of the first `A` fragment register (register operand only).
    let a_reg = acc_regs + if accumulate { acc_regs } else { 0 };
    let (a_op, b_op) = (format!("${first}"), format!("${}", first + 1));
    for step in 0..p.steps {
        // `p` (scale-d) false overwrites the accumulator: the first step without an input.
        let overwrite = u32::from(!accumulate && step == 0);
        s += &format!("setp.ne.b32 p, one, {overwrite};\n");
        let a_arg = match a {
            Operand::Shared => {
                s += &format!("add.s64 da, {a_op}, {};\n", (step * p.a_step) >> 4);
                "da".to_string()
            }
            Operand::Registers => {
                let r = a_reg + 4 * step as usize;
                format!("{{%{}, %{}, %{}, %{}}}", r, r + 1, r + 2, r + 3)
            }
        };
        s += &format!("add.s64 db, {b_op}, {};\n", (step * p.b_step) >> 4);
        let tb = u32::from(p.b_transposed);
        s += &match a {
            Operand::Shared => format!(
                "wgmma.mma_async.sync.aligned.m64n64k16.f32.{ty}.{ty} $0, {a_arg}, db, p, 1, 1, 0, {tb};\n"
            ),
            Operand::Registers => format!(
                "wgmma.mma_async.sync.aligned.m64n64k16.f32.{ty}.{ty} $0, {a_arg}, db, p, 1, 1, {tb};\n"
            ),
        };
    }
    s += "wgmma.commit_group.sync.aligned;\nwgmma.wait_group.sync.aligned 0;\n}";
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_text_names_every_operand_once_per_step() {
        let p = Product {
            bf16: false,
            steps: 4,
            a_step: 2048,
            b_step: 256,
            b_transposed: true,
        };
        let t = product_ptx(p, Operand::Registers, true, 48);
        assert_eq!(t.matches("wgmma.mma_async").count(), 4);
        assert_eq!(t.matches("mov.b32 %").count(), 32);
        // The last step's fragment registers follow the 32 outputs and 32 inputs.
        assert!(t.contains("{%76, %77, %78, %79}"), "{t}");
        assert!(t.contains("add.s64 db, $49, 48;"), "{t}");
        let z = product_ptx(p, Operand::Shared, false, 1);
        assert!(
            z.contains("setp.ne.b32 p, one, 1;"),
            "the first step overwrites"
        );
        assert!(z.contains("add.s64 da, $1, 384;"), "{z}");
    }
}

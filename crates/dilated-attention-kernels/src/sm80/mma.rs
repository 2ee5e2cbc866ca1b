//! Building blocks of the manual-MMA kernels (`sm80::forward`, `sm80::backward_dq`, `sm80::backward_dkdv`):
//! `mma.sync.m16n8k16` tiles (f16/bf16 operands, f32 accumulators) fed by `ldmatrix`, on CUDA
//! sm_80 and later.
//!
//! Register layout (PTX's, lane = `4·g + t`): an accumulator tile of 16×8 holds rows `g` and
//! `g + 8`, columns `2t, 2t + 1` (two `Vector<f32, 2>`); an `A` fragment (16×16) holds the same
//! rows at columns `2t, 2t + 1` and `2t + 8, 2t + 9` (four `Vector<F, 2>`); so the accumulators
//! of two adjacent 8-column tiles, rounded to `F`, are the `A` fragment of the next product —
//! `P` and `dS` never leave registers. The other side's chunks arrive by `cp.async` into two
//! shared stages (one cube barrier each), so the next chunk loads while the current one is
//! computed, without registers in flight. Shared tiles are rows of `head_dim + 8` halves (one
//! spare 8-wide vector per row), which puts the 8 rows of each `ldmatrix` phase on distinct
//! banks.

use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::prelude::barrier::{Barrier, copy_async};
use cubecl::prelude::*;

use crate::addressing::{Rows, Tile};

/// Rows of the other side (keys for queries, queries for keys) per shared-memory chunk.
pub(crate) const CHUNK: usize = 64;

/// Two elements: the vector width of every fragment register.
pub(crate) type P2 = Const<2>;

/// The one MMA shape of these kernels: 16×8×16, `F × F → f32`.
#[cube]
pub(crate) fn mma_def<F: Float>() -> MmaDefinition<F, F, f32> {
    MmaDefinition::<F, F, f32>::new(16usize, 8usize, 16usize)
}

/// `2^x` with the hardware's approximate exponential (relative error about 2⁻²²; `-inf` → 0).
#[cube]
pub(crate) fn exp2_approx(x: f32) -> f32 {
    let out: f32;
    gpu_asm!(
        "ex2.approx.ftz.f32 {o}, {i};",
        o = out(_) out,
        i = in(_) x,
        options(pure, nomem),
    );
    out
}

/// `count` accumulator tiles of 16×8 holding zeros.
#[cube]
pub(crate) fn zero_tiles(#[comptime] count: usize) -> Sequence<Array<Vector<f32, P2>>> {
    let mut tiles = Sequence::<Array<Vector<f32, P2>>>::new();
    #[unroll]
    for _ in 0..count {
        let mut a = Array::<Vector<f32, P2>>::new(2usize);
        a[0] = Vector::new(0.0f32);
        a[1] = Vector::new(0.0f32);
        tiles.push(a);
    }
    tiles
}

/// The `A` fragments of `tiles` stacked 16-row tiles starting at shared row `row0`, `rstr`
/// vectors apart: `head_dim / 16` per tile, tile `i`'s fragment `ds` at `i · head_dim / 16 + ds`.
#[cube]
pub(crate) fn a_fragments<F: Float, N: Size>(
    buf: &[Vector<F, N>],
    row0: usize,
    #[comptime] tiles: usize,
    #[comptime] rstr: usize,
    #[comptime] head_dim: usize,
) -> Sequence<Array<Vector<F, P2>>> {
    let mma = mma_def::<F>();
    let lane = UNIT_POS_PLANE as usize;
    let (m8, r8) = (lane / 8, lane % 8);
    let mut frags = Sequence::<Array<Vector<F, P2>>>::new();
    #[unroll]
    for i in 0..tiles {
        #[unroll]
        for ds in 0..comptime!(head_dim / 16) {
            let idx = (row0 + i * 16 + (m8 % 2) * 8 + r8) * rstr + ds * 2 + m8 / 2;
            frags.push(mma.load_matrix::<_, P2>(&buf[idx..idx + 1], MatrixIdent::A, 4usize, false));
        }
    }
    frags
}

/// The two 16×8 `B` fragments (`b[0..2]`, `b[2..4]`) one `ldmatrix.x4` reads from the shared
/// rows starting at `row0`, `rstr` vectors apart:
/// - `trans = false`: `B_j = Xᵀ` for the 8 rows `row0 + 8j ..` of `X` and the 16 columns
///   `16·kc ..` (`X·Yᵀ` products: `Q·Kᵀ`, `dO·Vᵀ`, `K·Qᵀ`, `V·dOᵀ`);
/// - `trans = true`: `B_j = X` for the 16 rows `row0 ..` and the 8 columns `8(kc + j0 + j) ..`
///   (`P·V`, `dS·K`, `Pᵀ·dO`, `dSᵀ·Q`; a runtime `kc` lets a plane own a slice of the columns).
#[cube]
fn b_fragments<F: Float, N: Size>(
    buf: &[Vector<F, N>],
    row0: usize,
    kc: usize,
    #[comptime] j0: usize,
    #[comptime] rstr: usize,
    #[comptime] trans: bool,
) -> Array<Vector<F, P2>> {
    let mma = mma_def::<F>();
    let lane = UNIT_POS_PLANE as usize;
    let (m8, r8) = (lane / 8, lane % 8);
    // Matrix m8 of the x4 load: (row half, column half) = (m8 / 2, m8 % 2) untransposed,
    // (m8 % 2, m8 / 2) transposed; column halves are 8-wide vectors.
    let idx = if comptime!(trans) {
        (row0 + (m8 % 2) * 8 + r8) * rstr + (kc + j0 + m8 / 2)
    } else {
        (row0 + (m8 / 2) * 8 + r8) * rstr + kc * 2 + m8 % 2
    };
    mma.load_matrix::<_, P2>(&buf[idx..idx + 1], MatrixIdent::B, 4usize, trans)
}

/// `acc[j] += a · B_j` for `j = j0, j0 + 1`, the two `B` fragments of [`b_fragments`](fn@b_fragments) (same
/// `row0`, `kc`, `trans`; for `trans` the columns start at `8·(kc + j0)`): [`mma_rows`](fn@mma_rows) for one
/// tile.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mma_pair<F: Float, N: Size>(
    a: &Array<Vector<F, P2>>,
    buf: &[Vector<F, N>],
    row0: usize,
    kc: usize,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    #[comptime] j0: usize,
    #[comptime] rstr: usize,
    #[comptime] trans: bool,
) {
    let mut one = Sequence::<Array<Vector<F, P2>>>::new();
    // In the expansion this clones the fragment's handle, not its registers (the form run on
    // the GPU; clippy prefers `*a`).
    #[allow(clippy::clone_on_copy)]
    one.push(a.clone());
    mma_rows::<F, N>(
        &one, 0usize, 0usize, 1usize, buf, row0, kc, acc, j0, 0usize, rstr, trans,
    );
}

/// [`mma_pair`](fn@mma_pair) for `tiles` stacked 16-row tiles sharing one `ldmatrix.x4` of `B`:
/// `acc[j0 + i·j_step + j] += a[a0 + i·a_step] · B_j` for `i < tiles`, `j = 0, 1`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mma_rows<F: Float, N: Size>(
    a: &Sequence<Array<Vector<F, P2>>>,
    #[comptime] a0: usize,
    #[comptime] a_step: usize,
    #[comptime] tiles: usize,
    buf: &[Vector<F, N>],
    row0: usize,
    kc: usize,
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    #[comptime] j0: usize,
    #[comptime] j_step: usize,
    #[comptime] rstr: usize,
    #[comptime] trans: bool,
) {
    let mma = mma_def::<F>();
    let b = b_fragments::<F, N>(buf, row0, kc, j0, rstr, trans);
    let mut b0 = Array::<Vector<F, P2>>::new(2usize);
    let mut b1 = Array::<Vector<F, P2>>::new(2usize);
    b0[0] = b[0];
    b0[1] = b[1];
    b1[0] = b[2];
    b1[1] = b[3];
    #[unroll]
    for i in 0..tiles {
        let ai = a.index(comptime!(a0 + i * a_step));
        mma.execute_inplace(ai, &b0, acc.index_mut(comptime!(j0 + i * j_step)));
        mma.execute_inplace(ai, &b1, acc.index_mut(comptime!(j0 + i * j_step + 1)));
    }
}

/// The `A` fragment of columns `16·kk ..` of a 16-row matrix held as accumulator tiles,
/// rounded to `F`.
#[cube]
pub(crate) fn tiles_as_a<F: Float>(
    tiles: &Sequence<Array<Vector<f32, P2>>>,
    #[comptime] kk: usize,
) -> Array<Vector<F, P2>> {
    let mut a = Array::<Vector<F, P2>>::new(4usize);
    a[0] = Vector::cast_from(tiles.index(2 * kk)[0]);
    a[1] = Vector::cast_from(tiles.index(2 * kk)[1]);
    a[2] = Vector::cast_from(tiles.index(2 * kk + 1)[0]);
    a[3] = Vector::cast_from(tiles.index(2 * kk + 1)[1]);
    a
}

/// `acc = s · acc` row-wise over stacked 16-row tiles of `per_tile` accumulators each:
/// `s[2i]` for row `g`, `s[2i + 1]` for row `g + 8` of tile `i`.
#[cube]
#[allow(clippy::assign_op_pattern)] // kept as measured on the GPU (`*=` on vector elements untried)
pub(crate) fn scale_rows(
    acc: &mut Sequence<Array<Vector<f32, P2>>>,
    s: &Array<f32>,
    #[comptime] per_tile: usize,
) {
    #[unroll]
    for dt in 0..acc.len() {
        let a = acc.index_mut(dt);
        a[0] = a[0] * Vector::new(s[comptime!(2 * (dt / per_tile))]);
        a[1] = a[1] * Vector::new(s[comptime!(2 * (dt / per_tile) + 1)]);
    }
}

/// Stages `rows` gathered rows of `x` (one head, from gathered token `first`) as 8-wide
/// vectors into `buf` from shared row `row0`; `x` holds the tokens of `window` (see
/// [`Rows`]), and rows outside it repeat the window's first token.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_rows<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    window: &Rows,
    head: usize,
    first: usize,
    row0: usize,
    #[comptime] rows: usize,
    #[comptime] threads: usize,
    #[comptime] rstr: usize,
    #[comptime] head_dim: usize,
) {
    let nv = N::value();
    let hv = comptime!(head_dim / nv);
    let base = tile.batch * x.stride(0) + head * x.stride(1);
    let mut e = UNIT_POS as usize;
    while e < rows * hv {
        let r = e / hv;
        let dv = e % hv;
        let p = window.row(tile, first + r);
        buf[(row0 + r) * rstr + dv] = x[(base + p * x.stride(2)) / nv + dv];
        e += threads;
    }
}

/// Issues this unit's share of the asynchronous copies (`cp.async`, 16 bytes each) of the
/// `CHUNK` gathered rows of `x` and of `y` (one head each) from gathered token `first` into the
/// shared rows `row0 ..` (`x`) and `row0 + CHUNK ..` (`y`); `x, y` hold the tokens of
/// `window`, and rows outside it repeat the window's first token. The caller commits them on
/// the stage's barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn issue_pair<F: Float, N: Size>(
    x: &Tensor<Vector<F, N>>,
    y: &Tensor<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    window: &Rows,
    head: usize,
    first: usize,
    row0: usize,
    #[comptime] threads: usize,
    #[comptime] rstr: usize,
    #[comptime] head_dim: usize,
) {
    let nv = N::value();
    let hv = comptime!(head_dim / nv);
    let per = comptime!(CHUNK * head_dim / nv / threads);
    let x_base = tile.batch * x.stride(0) + head * x.stride(1);
    let y_base = tile.batch * y.stride(0) + head * y.stride(1);
    #[unroll]
    for i in 0..per {
        let e = UNIT_POS as usize + i * threads;
        let c = e / hv;
        let dv = e % hv;
        let p = window.row(tile, first + c);
        let xi = (x_base + p * x.stride(2)) / nv + dv;
        let yi = (y_base + p * y.stride(2)) / nv + dv;
        let xs = (row0 + c) * rstr + dv;
        let ys = (row0 + CHUNK + c) * rstr + dv;
        copy_async(
            x.slice(xi, xi + 1),
            &mut buf[xs..xs + 1],
            comptime!(nv as u32),
        );
        copy_async(
            y.slice(yi, yi + 1),
            &mut buf[ys..ys + 1],
            comptime!(nv as u32),
        );
    }
}

/// Zeroes the `CHUNK` shared rows from `row0` (and, with `pair`, the `CHUNK` rows after them)
/// whose key is not there (`kvalid[kv0 + c] == 0`: padding, or past the window's end, where
/// the staged row repeats its first token). Such rows may hold anything, NaN included, and the
/// tensor cores would spread `0 · NaN` to real rows. Run by all `threads` units, the same
/// elements per unit as [`issue_pair`](fn@issue_pair); the caller syncs before the rows are read.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn zero_absent_rows<F: Float, N: Size>(
    buf: &mut [Vector<F, N>],
    kvalid: &[u32],
    kv0: usize,
    row0: usize,
    #[comptime] pair: bool,
    #[comptime] threads: usize,
    #[comptime] rstr: usize,
    #[comptime] head_dim: usize,
) {
    let nv = N::value();
    let hv = comptime!(head_dim / nv);
    let per = comptime!(CHUNK * head_dim / nv / threads);
    #[unroll]
    for i in 0..per {
        let e = UNIT_POS as usize + i * threads;
        let c = e / hv;
        let dv = e % hv;
        if kvalid[kv0 + c] == 0 {
            buf[(row0 + c) * rstr + dv] = Vector::new(F::new(0.0));
            if comptime!(pair) {
                buf[(row0 + CHUNK + c) * rstr + dv] = Vector::new(F::new(0.0));
            }
        }
    }
}

/// Commits this unit's pending copies on the barrier of `stage` (`bar0` or `bar1`).
#[cube]
pub(crate) fn commit(bar0: &Shared<Barrier>, bar1: &Shared<Barrier>, stage: usize) {
    if stage == 0 {
        bar0.commit_copy_async();
    } else {
        bar1.commit_copy_async();
    }
}

/// Waits until every unit's copies of `stage` (`bar0` or `bar1`) have landed.
#[cube]
pub(crate) fn wait(bar0: &Shared<Barrier>, bar1: &Shared<Barrier>, stage: usize) {
    if stage == 0 {
        bar0.arrive_and_wait();
    } else {
        bar1.arrive_and_wait();
    }
}

/// A walk over the chunks of `CHUNK` gathered rows that one layout row lists: its runs of
/// blocks, each block in chunks.
#[derive(CubeType)]
pub(crate) struct Walk {
    run: usize,
    run_end: usize,
    blk: usize,
    blk_end: usize,
    c0: usize,
    /// Only blocks in `[lo, hi)` are walked (a window's blocks; all of them without one).
    lo: usize,
    hi: usize,
}

#[cube]
impl Walk {
    /// The walk of layout row `row` (`row_ptr`/`runs` as in `crate::args::ClassCsr`),
    /// over its blocks in `[lo, hi)` (see [`Rows::first_block`] and
    /// [`Rows::end_block`]).
    /// Without a window (`windowed` false) the bounds are not read.
    pub(crate) fn new(
        row_ptr: &Tensor<u32>,
        runs: &Tensor<u32>,
        row: usize,
        lo: usize,
        hi: usize,
        #[comptime] windowed: bool,
    ) -> Walk {
        let mut walk = Walk {
            run: row_ptr[row] as usize,
            run_end: row_ptr[row + 1] as usize,
            blk: 0usize,
            blk_end: 0usize,
            c0: 0usize,
            lo,
            hi,
        };
        walk.settle(runs, windowed);
        walk
    }

    /// The walk of `tile`'s layout row (`row_ptr`/`runs` as in `crate::args::ClassCsr`, the
    /// row of its query block, or of its key block in a transposed layout) over the blocks
    /// of `block` tokens that meet `rows` (the other side's window).
    pub(crate) fn of_tile(
        row_ptr: &Tensor<u32>,
        runs: &Tensor<u32>,
        tile: &Tile,
        rows: &Rows,
        #[comptime] block: usize,
        #[comptime] windowed: bool,
    ) -> Walk {
        Walk::new(
            row_ptr,
            runs,
            tile.csr_base + tile.qb,
            rows.first_block(block),
            rows.end_block(block),
            windowed,
        )
    }

    /// A walk with no chunk, for a kernel whose chunk positions come from elsewhere (the
    /// Hopper forward's handoff, `crate::hopper::query_tile`).
    pub(crate) fn idle() -> Walk {
        Walk {
            run: 0usize,
            run_end: 0usize,
            blk: 0usize,
            blk_end: 0usize,
            c0: 0usize,
            lo: 0usize,
            hi: 0usize,
        }
    }

    /// Moves to the first run from the current one that has a block in `[lo, hi)`, and to its
    /// first such block.
    fn settle(&mut self, runs: &Tensor<u32>, #[comptime] windowed: bool) {
        if comptime!(windowed) {
            let mut searching = self.run < self.run_end;
            while searching {
                let start = runs[2 * self.run] as usize;
                let end = runs[2 * self.run + 1] as usize;
                self.blk = select(start > self.lo, start, self.lo);
                self.blk_end = select(end < self.hi, end, self.hi);
                if self.blk < self.blk_end {
                    searching = false;
                } else {
                    self.run += 1;
                    searching = self.run < self.run_end;
                }
            }
        } else if self.run < self.run_end {
            self.blk = runs[2 * self.run] as usize;
            self.blk_end = runs[2 * self.run + 1] as usize;
        }
    }

    /// Whether the walk has a chunk left.
    pub(crate) fn live(&self) -> bool {
        self.run < self.run_end
    }

    /// The current chunk's first gathered token.
    pub(crate) fn first(&self, #[comptime] block: usize) -> usize {
        self.blk * block + self.c0
    }

    /// Moves to the next chunk.
    pub(crate) fn advance(
        &mut self,
        runs: &Tensor<u32>,
        #[comptime] block: usize,
        #[comptime] windowed: bool,
    ) {
        self.c0 += CHUNK;
        if self.c0 >= block {
            self.c0 = 0;
            self.blk += 1;
            if self.blk >= self.blk_end {
                self.run += 1;
                self.settle(runs, windowed);
            }
        }
    }
}

/// Asks the compiler to budget registers for `min_blocks` resident cubes per SM (0: no ask).
///
/// CubeCL emits `__launch_bounds__(threads)` alone, so ptxas sizes registers for one cube; a
/// marker comment in the source tells the workspace's patched `cubecl-cuda`
/// (`patches/README.md`) to add the minimum. Elsewhere the comment changes nothing. A kernel
/// that moves registers between warpgroups (`setmaxnreg`) asks for 1: without a minimum ptxas
/// does not know the count at entry and ignores `setmaxnreg` (its warning C7508).
#[cube]
pub(crate) fn occupancy_hint(#[comptime] min_blocks: u32) {
    if comptime!(min_blocks == 1) {
        comment!("cubecl-min-blocks-per-sm=1");
    }
    if comptime!(min_blocks == 2) {
        comment!("cubecl-min-blocks-per-sm=2");
    }
    if comptime!(min_blocks == 3) {
        comment!("cubecl-min-blocks-per-sm=3");
    }
    if comptime!(min_blocks == 4) {
        comment!("cubecl-min-blocks-per-sm=4");
    }
}

/// Resident cubes per SM to ask registers for: `wanted` where that many cubes also fit the
/// SM's shared memory at `shared_bytes` each, else none (0).
pub(crate) fn min_blocks(client: &Client, wanted: u8, shared_bytes: usize) -> u32 {
    let wanted = u32::from(wanted.min(4));
    // Every resident cube also holds 1 KB that CUDA reserves; the opt-in limit per cube is the
    // SM's shared memory less that kilobyte.
    let per_sm = client.properties().hardware.max_shared_memory_size + 1024;
    if wanted > 1 && wanted as usize * (shared_bytes + 1024) <= per_sm {
        wanted
    } else {
        0
    }
}

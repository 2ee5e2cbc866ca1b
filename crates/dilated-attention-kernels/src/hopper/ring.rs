//! The ring of shared stages between a Hopper kernel's producer warp and its two consumer
//! warpgroups.
//!
//! `STAGES` stages of one `CHUNK`-row chunk each: keys then values for the forward and `dQ`
//! ([`fill_stage`](fn@fill_stage)), queries then `dO` for `dK/dV` (on
//! [`copy_pair`](fn@copy_pair)); `CHUNK × d` f16/bf16 each in the 128-byte swizzled layout,
//! `super::wgmma::swizzled`. Chunk `i` of a cube's
//! walk goes to stage `i % STAGES` in round `i / STAGES`. Two mbarriers per stage:
//! - `full[s]` (32 arrivals: the producer warp's units) completes a phase when every producer
//!   unit has arrived *and* its `cp.async` copies into the stage have landed
//!   (`cp.async.mbarrier.arrive` adds each unit's pending copies to the phase);
//! - `empty[s]` (256 arrivals: every consumer unit) completes a phase when both warpgroups are
//!   done reading the stage.
//!
//! The producer waits `empty[s]` with the parity before round `r` (a fresh barrier counts its
//! "previous" phase as complete, so round 0 does not wait), fills the stage and arrives on
//! `full[s]`; a consumer waits `full[s]` with parity `r & 1`, computes and arrives on
//! `empty[s]`. Every consumer waits for every chunk, including those it skips (a causal chunk
//! past its rows): an arrival before the fill would count towards the wrong phase.
//!
//! The barriers are plain `mbarrier`s in one shared array, driven by inline PTX rather than
//! CubeCL's `Barrier`: its `wait_parity` is libcu++'s wait, which after 16 polls reads the global
//! timer and backs off with `nanosleep` — a producer that waits most of a chunk for a free stage
//! wakes late, and the consumers then wait for the copy. [`Ring`] waits with a bare
//! `mbarrier.try_wait.parity` loop (the hardware suspends the thread inside `try_wait` for a
//! bounded time, so the loop does not hammer the barrier), and picks a stage's barrier by its
//! address instead of a branch.

use cubecl::prelude::barrier::copy_async;
use cubecl::prelude::*;

use super::wgmma::{shared_address, swizzled};
use crate::addressing::{Rows, Tile};
use crate::portable::finite::not_finite;
use crate::sm80::forward::key_present;
use crate::sm80::mma::CHUNK;
use crate::sm80::rows::NO_KEY;

/// Stages in the ring (four chunks of keys and values in flight: 64 KB).
pub(crate) const STAGES: usize = 4;
/// Words of the key flags beside the ring: one a key of each stage (`kvalid[s · CHUNK + c]`),
/// then one a stage naming the first key of a causal diagonal chunk whose value row was not
/// finite ([`fill_stage`](fn@fill_stage), `kvalid[STAGES · CHUNK + s]`).
pub(crate) const FLAGS: usize = STAGES * CHUNK + STAGES;

/// Producer units: one warp.
pub(crate) const PRODUCERS: usize = 32;
/// Consumer units: two warpgroups.
pub(crate) const CONSUMERS: usize = 256;

/// A ring's `2 · depth` mbarriers: `full[s]` at shared address `base + 8s`, `empty[s]` at
/// `base + 8 (depth + s)`. The chunk ring has `STAGES` stages; the Hopper forward's query
/// buffers (`super::query_tile`) are a ring of two.
#[derive(CubeType)]
pub(crate) struct Ring {
    base: u32,
    #[cube(comptime)]
    depth: usize,
}

#[cube]
impl Ring {
    /// The chunk ring: `STAGES` stages, a `full` phase of `PRODUCERS` arrivals.
    pub(crate) fn new() -> Ring {
        Ring::with(STAGES, PRODUCERS as u32, true)
    }

    /// Declares a ring of `depth` stages whose `full` phases complete on `producers` arrivals
    /// (plus their copies) and `empty` phases on `CONSUMERS`, and, where the kernel `uses` it,
    /// has unit 0 initialise the barriers; the caller syncs the cube before any unit uses them.
    pub(crate) fn with(
        #[comptime] depth: usize,
        #[comptime] producers: u32,
        #[comptime] uses: bool,
    ) -> Ring {
        let bars = Shared::<[u64]>::new_aligned_slice(comptime!(2 * depth), 8usize);
        let ring = Ring {
            base: shared_address::<u64>(&bars[0..comptime!(2 * depth)]),
            depth,
        };
        if comptime!(uses) && UNIT_POS == 0 {
            #[unroll]
            for s in 0..depth {
                init(ring.full(s), producers);
                init(ring.empty(s), comptime!(CONSUMERS as u32));
            }
            // The initialised barriers become visible to the other units (and to the async
            // proxy that completes `cp.async` arrivals) at the caller's cube barrier.
            gpu_asm!("fence.mbarrier_init.release.cluster;");
        }
        ring
    }

    /// Shared address of `full[s]`.
    fn full(&self, s: usize) -> u32 {
        self.base + s as u32 * 8u32
    }

    /// Shared address of `empty[s]`.
    fn empty(&self, s: usize) -> u32 {
        self.base + (s + self.depth) as u32 * 8u32
    }

    /// Producer: waits until stage `i % depth` is free for chunk `i`.
    pub(crate) fn acquire(&self, i: usize) {
        let parity = ((i / self.depth) as u32 & 1u32) ^ 1u32;
        wait(self.empty(i % self.depth), parity);
    }

    /// Producer: this unit's copies and stores into stage `i % depth` are issued; the stage
    /// is full once they land and every producer unit has arrived.
    pub(crate) fn publish(&self, i: usize) {
        let bar = self.full(i % self.depth);
        // One more pending arrival, made when this unit's `cp.async` copies land...
        gpu_asm!("cp.async.mbarrier.arrive.shared::cta.b64 [{b}];", b = in(_) bar);
        // ...and this unit's own.
        arrive(bar);
    }

    /// Shared address of the `full` barrier of chunk `i`'s stage (for `super::tma`).
    pub(crate) fn full_address(&self, i: usize) -> u32 {
        self.full(i % self.depth)
    }

    /// Producer: this unit's arrival on chunk `i`'s `full` barrier, with no copies of its own
    /// to wait for (a chunk loaded by TMA, `super::tma`).
    pub(crate) fn arrive_full(&self, i: usize) {
        arrive(self.full(i % self.depth));
    }

    /// Consumer: waits until chunk `i` is in its stage.
    pub(crate) fn take(&self, i: usize) {
        let parity = (i / self.depth) as u32 & 1u32;
        wait(self.full(i % self.depth), parity);
    }

    /// Consumer: this unit is done reading chunk `i`'s stage.
    pub(crate) fn release(&self, i: usize) {
        arrive(self.empty(i % self.depth));
    }
}

/// Initialises the mbarrier at shared address `bar` to expect `count` arrivals a phase.
#[cube]
fn init(bar: u32, #[comptime] count: u32) {
    gpu_asm!("mbarrier.init.shared::cta.b64 [{b}], {c};", b = in(_) bar, c = const count);
}

/// Arrives on the mbarrier at shared address `bar` (release semantics, CTA scope).
#[cube]
fn arrive(bar: u32) {
    gpu_asm!("mbarrier.arrive.shared::cta.b64 _, [{b}];", b = in(_) bar);
}

/// Waits until the phase of `parity` of the mbarrier at shared address `bar` has completed
/// (acquire semantics, CTA scope). The labels are local to the braces, so the block can be
/// inlined any number of times.
#[cube]
fn wait(bar: u32, parity: u32) {
    gpu_asm!(
        "{{ .reg .pred done; WAIT: mbarrier.try_wait.parity.shared::cta.b64 done, [{b}], {p}; @!done bra WAIT; }}",
        b = in(_) bar,
        p = in(_) parity,
    );
}

/// Consumers only: waits until every consumer unit has arrived (named barrier 1, `CONSUMERS`
/// units), after making this unit's generic-proxy writes to shared memory visible to `wgmma`.
/// Lets the consumers stage their tiles while the producer warp, which never takes part, is
/// already filling the ring.
#[cube]
pub(crate) fn sync_consumers() {
    sync_async_proxy_shared();
    gpu_asm!("bar.sync 1, 256;");
}

/// Waits until the four planes of warpgroup `group` (0 or 1) have arrived (named barriers 2
/// and 3, 128 units each).
#[cube]
pub(crate) fn sync_warpgroup(group: usize) {
    if group == 0 {
        gpu_asm!("bar.sync 2, 128;");
    } else {
        gpu_asm!("bar.sync 3, 128;");
    }
}

/// Producer (one warp): copies the chunk of `CHUNK` gathered keys from `first` into stage `s`
/// (keys at vector `2s · tv`, values one tile later, `tv = CHUNK · head_dim / 8` vectors a tile)
/// and writes the chunk's key flags at `kvalid[s · CHUNK..]`. The key and value rows of keys
/// that are not there are stored as zeros instead of copied, so a NaN beyond a window or under
/// the padding mask never meets the tensor cores (`dQ += dS·K` would carry it past `dS = 0`).
///
/// With `causal`, a `diagonal` chunk (one whose keys run past the cube's first query row, so
/// that some rows must not see some of its keys) also has its value rows checked once they
/// land: a 16-byte vector holding a NaN or an infinity becomes zeros — `P·V` multiplies it by
/// `p = 0` for the rows that must not see it, and `0 · NaN` is NaN — and the stage's summary
/// word `kvalid[STAGES · CHUNK + s]` names the first such key ([`NO_KEY`] if none, and for
/// every chunk that is not diagonal). Every row at or after that key sees it and writes NaN
/// (`crate::sm80::rows::mark_rows_from`).
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(crate) fn fill_stage<F: Float, N: Size>(
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    mask: &Tensor<u32>,
    buf: &mut [Vector<F, N>],
    kvalid: &mut [u32],
    tile: &Tile,
    keys: &Rows,
    first: usize,
    s: usize,
    diagonal: bool,
    #[comptime] head_dim: usize,
    #[comptime] masked: bool,
    #[comptime] causal: bool,
) {
    let lane = UNIT_POS as usize % 32;
    #[unroll]
    for j in 0..comptime!(CHUNK / 32) {
        let c = lane + 32 * j;
        kvalid[s * CHUNK + c] = key_present(mask, tile, first + c, masked);
    }
    let at = s * comptime!(2 * CHUNK * head_dim / 8);
    copy_pair::<F, N>(
        k,
        v,
        mask,
        buf,
        tile,
        keys,
        tile.kv_head,
        first,
        at,
        head_dim,
        true,
        masked,
    );
    if comptime!(causal) {
        let mut first_bad = u32::new(NO_KEY as i64);
        if diagonal {
            // This unit's copies land; it checks exactly the vectors it copied.
            gpu_asm!("cp.async.wait_all;");
            first_bad = plane_min(finite_values::<F, N>(
                buf,
                at + comptime!(CHUNK * head_dim / 8),
                first,
                head_dim,
            ));
        }
        if lane == 0 {
            kvalid[STAGES * CHUNK + s] = first_bad;
        }
    }
}

/// Producer (one warp), after its copies into a value tile at vector `at` have landed: sets to
/// zeros each vector this unit copied ([`copy_pair`](fn@copy_pair)'s rows and columns) that
/// holds a NaN or an infinity, and returns the first gathered key (from `first`) it did that
/// for, or [`NO_KEY`].
#[cube]
fn finite_values<F: Float, N: Size>(
    buf: &mut [Vector<F, N>],
    at: usize,
    first: usize,
    #[comptime] head_dim: usize,
) -> u32 {
    let nv = N::value();
    let lane = UNIT_POS as usize % 32;
    let c = lane % 8;
    let mut first_bad = u32::new(NO_KEY as i64);
    #[unroll]
    for j in 0..comptime!(CHUNK / 4) {
        let r = lane / 8 + comptime!(4 * j);
        #[unroll]
        for h in 0..comptime!(head_dim / 64) {
            let to = at + swizzled(r, c + comptime!(8 * h), CHUNK);
            let x = buf[to];
            let mut bad = false;
            #[unroll]
            for e in 0..nv {
                bad = bad || not_finite(f32::cast_from(x.extract(e)));
            }
            if bad {
                buf[to] = Vector::new(F::new(0.0));
                let key = (first + r) as u32;
                first_bad = select(key < first_bad, key, first_bad);
            }
        }
    }
    first_bad
}

/// Producer (one warp): copies `CHUNK` gathered rows of `a` and `b` (head `head`) from `first`
/// into the swizzled tiles (`super::wgmma::swizzled`) at vectors `at` and `at + tv`
/// (`tv = CHUNK · head_dim / 8`) by `cp.async`. Eight lanes copy a row, one 16-byte vector
/// each, so a warp's copy reads four whole 128-byte rows and writes each into all eight bank
/// groups; lane `l` serves rows `l / 8 + 4j`. With `keys_only`, the rows that are not keys
/// (`key_present`) are stored as zeros in both tiles instead of copied.
///
/// A chunk whose rows all lie inside `rows` (and, unmasked, are all keys) — every chunk but a
/// segment's or window's edge — takes [`copy_progression`](fn@copy_progression): its gathered
/// rows are an arithmetic progression, so each copy is a constant step from the last.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(crate) fn copy_pair<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    mask: &Tensor<u32>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    rows: &Rows,
    head: usize,
    first: usize,
    at: usize,
    #[comptime] head_dim: usize,
    #[comptime] keys_only: bool,
    #[comptime] masked: bool,
) {
    let a_base = tile.batch * a.stride(0) + head * a.stride(1);
    let b_base = tile.batch * b.stride(0) + head * b.stride(1);
    if whole_chunk(tile, rows, first, keys_only, masked) {
        copy_progression::<F, N>(a, b, buf, tile, rows, a_base, b_base, first, at, head_dim);
    } else {
        copy_rows::<F, N>(
            a, b, mask, buf, tile, rows, a_base, b_base, first, at, head_dim, keys_only, masked,
        );
    }
}

/// Whether the `CHUNK` gathered rows from `first` all lie inside `rows` and, with
/// `keys_only`, are all keys (inside the key window, no key mask): a chunk away from a
/// segment's or window's edge, whose rows are an arithmetic progression.
#[cube]
pub(crate) fn whole_chunk(
    tile: &Tile,
    rows: &Rows,
    first: usize,
    #[comptime] keys_only: bool,
    #[comptime] masked: bool,
) -> bool {
    let mut whole = first >= rows.lo && first + CHUNK <= rows.hi;
    if comptime!(keys_only) {
        whole = whole && first >= tile.k_lo && first + CHUNK <= tile.k_hi;
        if comptime!(masked) {
            whole = false;
        }
    }
    whole
}

/// [`copy_pair`](fn@copy_pair) for a chunk whose `CHUNK` gathered rows from `first` all lie
/// inside `rows`: row `r0 + 4j` of lane `l` (`r0 = l / 8`) is tensor row `p0 + 4j · dilation`,
/// so its source is `j` constant steps from row `p0`'s, and its place in the swizzled tile is
/// one of two lane bases (`j` even or odd: the atom row is `r0` or `r0 + 4`) plus a comptime
/// offset. `a_base`, `b_base`: the head's first element in `a` and `b`.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
fn copy_progression<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    rows: &Rows,
    a_base: usize,
    b_base: usize,
    first: usize,
    at: usize,
    #[comptime] head_dim: usize,
) {
    let nv = N::value();
    let lane = UNIT_POS as usize % 32;
    let (r0, c) = (lane / 8, lane % 8);
    let tv = comptime!(CHUNK * head_dim / 8);
    let p0 = tile.seg_start + (first + r0) * tile.dilation - rows.origin;
    // Strides are multiples of the vector width (`TensorRef::rows_aligned`): vector indices.
    let (sa, sb) = (a.stride(2) / nv, b.stride(2) / nv);
    let a0 = a_base / nv + p0 * sa + c;
    let b0 = b_base / nv + p0 * sb + c;
    let step = tile.dilation * 4;
    let (da, db) = (step * sa, step * sb);
    // `swizzled(r0 + 4j, c + 8h, CHUNK)`: r0 < 4, so the row's place in its atom is r0 for an
    // even `j` and r0 + 4 for an odd one, and its column `c ^ (r0 + 4 (j % 2))`.
    let even = at + r0 * 8 + (c ^ r0);
    let odd = at + r0 * 8 + 32 + (c ^ (r0 + 4));
    #[unroll]
    for j in 0..comptime!(CHUNK / 4) {
        let mut base = odd;
        if comptime!(j % 2 == 0) {
            base = even;
        }
        #[unroll]
        for h in 0..comptime!(head_dim / 64) {
            let to = base + comptime!((j / 2) * 64 + h * CHUNK * 8);
            let aj = a0 + da * j + comptime!(8 * h);
            let bj = b0 + db * j + comptime!(8 * h);
            copy_async(a.slice(aj, aj + 1), &mut buf[to..to + 1], comptime!(8u32));
            copy_async(
                b.slice(bj, bj + 1),
                &mut buf[to + tv..to + tv + 1],
                comptime!(8u32),
            );
        }
    }
}

/// [`copy_pair`](fn@copy_pair) row by row: each row's tensor row from `rows.row` (the first
/// row inside for one that is not), and with `keys_only` zeros for a row that is not a key.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
fn copy_rows<F: Float, N: Size>(
    a: &Tensor<Vector<F, N>>,
    b: &Tensor<Vector<F, N>>,
    mask: &Tensor<u32>,
    buf: &mut [Vector<F, N>],
    tile: &Tile,
    rows: &Rows,
    a_base: usize,
    b_base: usize,
    first: usize,
    at: usize,
    #[comptime] head_dim: usize,
    #[comptime] keys_only: bool,
    #[comptime] masked: bool,
) {
    let nv = N::value();
    let lane = UNIT_POS as usize % 32;
    let c = lane % 8;
    let tv = comptime!(CHUNK * head_dim / 8);
    #[unroll]
    for j in 0..comptime!(CHUNK / 4) {
        let r = lane / 8 + comptime!(4 * j);
        let p = rows.row(tile, first + r);
        let mut copy = true;
        if comptime!(keys_only) {
            copy = key_present(mask, tile, first + r, masked) != 0;
        }
        #[unroll]
        for h in 0..comptime!(head_dim / 64) {
            let to = at + swizzled(r, c + comptime!(8 * h), CHUNK);
            let aj = (a_base + p * a.stride(2)) / nv + c + comptime!(8 * h);
            let bj = (b_base + p * b.stride(2)) / nv + c + comptime!(8 * h);
            if copy {
                copy_async(a.slice(aj, aj + 1), &mut buf[to..to + 1], comptime!(8u32));
                copy_async(
                    b.slice(bj, bj + 1),
                    &mut buf[to + tv..to + tv + 1],
                    comptime!(8u32),
                );
            } else {
                buf[to] = Vector::new(F::new(0.0));
                buf[to + tv] = Vector::new(F::new(0.0));
            }
        }
    }
}

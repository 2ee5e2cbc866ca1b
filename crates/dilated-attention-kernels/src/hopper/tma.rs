//! TMA loads of a chunk's gathered rows (sm_90), for the producer warps of the Hopper forward,
//! `dQ` (keys and values) and `dK/dV` (queries and `dO`) (`Sm80Tuning::tma_loads`).
//!
//! A head class of dilation `r` reads, in a segment starting at raw row `s₀`, the rows
//! `s₀ + t·r` of `k, v: [batch, kv_heads, n, d]`. Seen as `[batch, kv_heads, ⌈n / r⌉, r, d]`
//! with strides `[s_b, s_h, r·s_n, s_n, 1]`, raw row `p` is `(⌊p / r⌋, p mod r)`, so the 64
//! gathered rows of a chunk from row `p₀` are the box `[1, 1, 64, 1, 64]` at
//! `(batch, head, ⌊p₀ / r⌋, p₀ mod r, 64h)`: one TMA copy moves 64 rows × 64 columns (8 KB) into
//! a stage's panel, in the 128-byte swizzle the `wgmma` descriptors read (`super::wgmma`).
//! The view reaches past row `n` where `r ∤ n`; a whole chunk (every row a key of the segment)
//! never asks for those rows.
//!
//! One producer lane issues the copies of a whole chunk: `mbarrier.arrive.expect_tx` on the
//! stage's `full` barrier with the chunk's bytes, then `cp.async.bulk.tensor` for the keys and
//! values of each 64-column panel, each completing its bytes on that barrier; the other lanes
//! arrive as usual. Chunks at an edge (a window or segment end inside the chunk, a key mask, a
//! causal diagonal whose values are checked after landing) keep `super::ring::fill_stage`.

use cubecl::prelude::*;

use super::ring::{Ring, STAGES, fill_stage, whole_chunk};
use crate::addressing::{Rows, Tile};
use crate::args::{AttnDtype, TensorRef};
use crate::sm80::mma::CHUNK;
use crate::sm80::rows::NO_KEY;

/// Bytes of one box: `CHUNK` rows of 64 two-byte elements.
const BOX_BYTES: u32 = (CHUNK * 64 * 2) as u32;

/// Whether the producer loads the chunk of `CHUNK` gathered keys from `first` by TMA: a whole
/// chunk ([`whole_chunk`](fn@super::ring::whole_chunk), keys only) that is not, causal, a
/// diagonal chunk (whose values are checked once they land, `super::ring::fill_stage`).
#[cube]
fn tma_keys(
    tile: &Tile,
    keys: &Rows,
    first: usize,
    diagonal: bool,
    #[comptime] masked: bool,
    #[comptime] causal: bool,
) -> bool {
    let mut whole = whole_chunk(tile, keys, first, true, masked);
    if comptime!(causal) {
        whole = whole && !diagonal;
    }
    whole
}

/// Producer (one warp) of the forward and `dQ`: chunk `i` of the gathered keys and values
/// from `first` into its stage of `buf` (whose shared address is `stages`) — with `tma` and a
/// chunk that [`tma_keys`](fn@tma_keys) takes, by TMA from the maps at `kaddr` and `vaddr`,
/// else by `super::ring::fill_stage` — and published. `diagonal`, `causal`: as for
/// `fill_stage`.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(crate) fn fill_or_load<F: Float, N: Size>(
    ring: &Ring,
    i: usize,
    k: &Tensor<Vector<F, N>>,
    v: &Tensor<Vector<F, N>>,
    mask: &Tensor<u32>,
    buf: &mut [Vector<F, N>],
    kvalid: &mut [u32],
    stages: u32,
    kaddr: u64,
    vaddr: u64,
    tile: &Tile,
    keys: &Rows,
    first: usize,
    diagonal: bool,
    #[comptime] head_dim: usize,
    #[comptime] masked: bool,
    #[comptime] causal: bool,
    #[comptime] tma: bool,
) {
    let stage = i % STAGES;
    let mut whole = false;
    if comptime!(tma) {
        whole = tma_keys(tile, keys, first, diagonal, masked, causal);
    }
    if whole {
        write_whole_flags(kvalid, stage, causal);
        let dst = stages + comptime!((2 * CHUNK * head_dim * 2) as u32) * stage as u32;
        load_whole_chunk(
            ring,
            i,
            kaddr,
            vaddr,
            dst,
            tile,
            keys,
            tile.kv_head,
            first,
            head_dim,
        );
    } else {
        fill_stage::<F, N>(
            k, v, mask, buf, kvalid, tile, keys, first, stage, diagonal, head_dim, masked, causal,
        );
        ring.publish(i);
    }
}

/// Producer (one warp): the key flags of a whole chunk in stage `s` (every key there) and,
/// causal, its summary word (no non-finite value to report: a whole chunk is not diagonal).
#[cube]
#[allow(clippy::collapsible_if)] // CubeCL kernel code: a comptime branch around a runtime one
fn write_whole_flags(kvalid: &mut [u32], s: usize, #[comptime] causal: bool) {
    let lane = UNIT_POS as usize % 32;
    #[unroll]
    for j in 0..comptime!(CHUNK / 32) {
        kvalid[s * CHUNK + lane + 32 * j] = 1u32;
    }
    if comptime!(causal) {
        if lane == 0 {
            kvalid[STAGES * CHUNK + s] = u32::new(NO_KEY as i64);
        }
    }
}

/// Producer (one warp): loads the whole chunk of `CHUNK` gathered rows from `first` (inside
/// `rows`, of head `head` of the maps' tensors) into stage `i % STAGES` — rows of the first
/// map at shared address `dst`, of the second one tile on — and publishes it. Lane 0 arms the
/// stage's `full` barrier with the bytes and issues the copies; every lane arrives.
#[cube]
#[allow(clippy::too_many_arguments, clippy::manual_is_multiple_of)] // CubeCL kernel code
pub(crate) fn load_whole_chunk(
    ring: &Ring,
    i: usize,
    amap: u64,
    bmap: u64,
    dst: u32,
    tile: &Tile,
    rows: &Rows,
    head: usize,
    first: usize,
    #[comptime] head_dim: usize,
) {
    let bar = ring.full_address(i);
    if UNIT_POS as usize % 32 == 0 {
        let panels = comptime!(head_dim / 64);
        let tile_bytes = comptime!((CHUNK * head_dim * 2) as u32);
        let bytes = comptime!(2 * panels as u32 * BOX_BYTES);
        arrive_expect_tx(bar, bytes);
        let row = tile.seg_start + first * tile.dilation - rows.origin;
        let j = (row / tile.dilation) as u32;
        let s = (row % tile.dilation) as u32;
        let (head, batch) = (head as u32, tile.batch as u32);
        #[unroll]
        for h in 0..panels {
            let at = dst + comptime!(h as u32 * BOX_BYTES);
            let col = comptime!(64 * h as u32);
            load_box(amap, at, bar, col, s, j, head, batch);
            load_box(bmap, at + tile_bytes, bar, col, s, j, head, batch);
        }
    } else {
        ring.arrive_full(i);
    }
}

/// `mbarrier.arrive.expect_tx`: one arrival on the barrier at shared address `bar`, and
/// `bytes` more to land in its phase.
#[cube]
pub(super) fn arrive_expect_tx(bar: u32, #[comptime] bytes: u32) {
    gpu_asm!(
        "mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n};",
        b = in(_) bar,
        n = const bytes,
    );
}

/// One box of the five-dimensional map at generic address `map` (coordinates innermost
/// first: column, row in the dilation, gathered row, head, batch) into shared address `dst`,
/// completing its bytes on the barrier at `bar`.
#[cube]
#[allow(clippy::too_many_arguments)] // CubeCL kernel code
pub(super) fn load_box(
    map: u64,
    dst: u32,
    bar: u32,
    col: u32,
    s: u32,
    j: u32,
    head: u32,
    batch: u32,
) {
    gpu_asm!(
        "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{m}, {{{c}, {s}, {j}, {h}, {b}}}], [{bar}];",
        d = in(_) dst,
        m = in(_) map,
        c = in(_) col,
        s = in(_) s,
        j = in(_) j,
        h = in(_) head,
        b = in(_) batch,
        bar = in(_) bar,
    );
}

/// The generic address of a kernel's tensor-map argument (what `cp.async.bulk.tensor` takes).
#[cube]
pub(crate) fn map_address<F: Float>(map: &TensorMap<F, Tiled>) -> u64 {
    address_of::<F>(map)
}

#[cfg(feature = "cuda")]
#[cube]
fn address_of<F: Float>(map: &TensorMap<F, Tiled>) -> u64 {
    cubecl_cpp::cuda::ptx::tensor_map_address::<F, Tiled>(map)
}

/// Without the CUDA compiler in the build no kernel that takes tensor maps can launch.
#[cfg(not(feature = "cuda"))]
#[cube]
fn address_of<F: Float>(_map: &TensorMap<F, Tiled>) -> u64 {
    0u64
}

/// The tensor maps of a launch over `a` and `b` (`[batch, heads, n, d]`, f16 or bf16: `k` and
/// `v` for the forward and `dQ`, `q` and `dO` for `dK/dV`) for a class of dilation `dilation`,
/// and whether they are the gathering maps: only where `wanted` and TMA can address both
/// tensors (16-byte aligned start, strides in whole 16-byte units). Otherwise one-element
/// stand-ins that the kernel never reads (a launch takes the arguments either way).
pub(crate) fn gather_maps(
    a: &TensorRef,
    b: &TensorRef,
    dilation: usize,
    dtype: AttnDtype,
    wanted: bool,
) -> (TensorMapArg<Tiled>, TensorMapArg<Tiled>, bool) {
    let usable = gathers(a, dilation, wanted) && gathers(b, dilation, wanted);
    let map = |t: &TensorRef| match usable {
        true => gather_map(t, dilation, dtype),
        false => stand_in_map(t, dtype),
    };
    (map(a), map(b), usable)
}

/// [`gather_maps`] for one tensor (`q` for the Hopper forward's query tiles).
pub(crate) fn gather_map_of(
    t: &TensorRef,
    dilation: usize,
    dtype: AttnDtype,
    wanted: bool,
) -> (TensorMapArg<Tiled>, bool) {
    match gathers(t, dilation, wanted) {
        true => (gather_map(t, dilation, dtype), true),
        false => (stand_in_map(t, dtype), false),
    }
}

/// Whether `t` gets a gathering map: `wanted`, a dilation and a tensor TMA can address.
fn gathers(t: &TensorRef, dilation: usize, wanted: bool) -> bool {
    wanted && dilation > 0 && addressable(t) && t.shape().len() == 4
}

/// Whether TMA can address `t`: a 16-byte aligned start, a contiguous last dim and the other
/// strides in whole 16-byte units (so is `r` times the row stride), every extent within `u32`.
fn addressable(t: &TensorRef) -> bool {
    let unit = 16 / t.elem_size().max(1);
    let start = t.handle().offset_start.unwrap_or(0);
    start.is_multiple_of(16)
        && t.rows_aligned(unit)
        && t.shape().iter().all(|&x| u32::try_from(x).is_ok())
}

/// `[batch, kv_heads, ⌈n / r⌉, r, d]` with strides `[s_b, s_h, r·s_n, s_n, 1]`, boxes of
/// `[1, 1, CHUNK, 1, 64]` in the 128-byte swizzle.
fn gather_map(t: &TensorRef, r: usize, dtype: AttnDtype) -> TensorMapArg<Tiled> {
    let (shape, strides) = (t.shape(), t.strides());
    let (b, h, n, d) = (shape[0], shape[1], shape[2], shape[3]);
    let view_shape = [b, h, n.div_ceil(r), r, d];
    let view_strides = [strides[0], strides[1], r * strides[2], strides[2], 1];
    // SAFETY: the view reaches only rows the tensor holds wherever a kernel reads through it
    // (whole chunks: rows of the segment); TMA checks each coordinate against its extent.
    let arg = unsafe {
        TensorArg::from_raw_parts(
            t.handle().clone(),
            view_strides.to_vec().into(),
            view_shape.to_vec().into(),
        )
    };
    let tile_size = [1, 1, CHUNK, 1, 64];
    TensorMapArg::new(
        TiledArgs {
            tile_size: tile_size.to_vec().into(),
        },
        arg,
        dtype.elem(),
    )
    .with_swizzle(TensorMapSwizzle::B128)
}

/// A map of one 8-element row at the start of `t`, which the kernel never reads.
fn stand_in_map(t: &TensorRef, dtype: AttnDtype) -> TensorMapArg<Tiled> {
    // SAFETY: one row of 8 elements at the tensor's start (its rows are 8-element aligned).
    let arg = unsafe {
        TensorArg::from_raw_parts(
            t.handle().clone(),
            vec![8, 8, 8, 8, 1].into(),
            vec![1, 1, 1, 1, 8].into(),
        )
    };
    TensorMapArg::new(
        TiledArgs {
            tile_size: vec![1, 1, 1, 1, 8].into(),
        },
        arg,
        dtype.elem(),
    )
}

#[cfg(test)]
mod tests {
    use cubecl::prelude::*;
    use cubecl::server::Handle;
    use rstest::rstest;

    use super::{gather_map_of, gather_maps};
    use crate::args::{AttnDtype, TensorRef};

    /// A tensor over a handle that addresses no memory (nothing is launched).
    fn tensor(shape: [usize; 4], strides: [usize; 4], offset: u64) -> TensorRef {
        let service = cubecl_common::device::ServiceId::of::<()>(cubecl_common::device::DeviceId {
            type_id: 0,
            index_id: 0,
        });
        let bytes = 2
            * (shape
                .iter()
                .zip(&strides)
                .map(|(s, t)| (s - 1) * t)
                .sum::<usize>()
                + 1);
        let mut handle = Handle::new(
            service,
            cubecl_environment::stream::StreamId::current(),
            bytes as u64 + offset,
        );
        handle.offset_start = Some(offset);
        TensorRef::new("k", handle, shape.to_vec(), strides.to_vec(), 2).expect("fits")
    }

    fn geometry(map: &TensorMapArg<Tiled>) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let meta = &map.metadata;
        let tile = match &meta.format {
            TensorMapFormat::Tiled(args) => args.tile_size.to_vec(),
            _ => panic!("a tiled map"),
        };
        (
            meta.metadata.shape().to_vec(),
            meta.metadata.strides().to_vec(),
            tile,
        )
    }

    #[rstest]
    #[case::dense(1, 1000)]
    #[case::dilated(3, 334)]
    #[case::dilation_past_n(4096, 1)]
    fn the_gathering_view_steps_a_dilation_of_rows(#[case] r: usize, #[case] groups: usize) {
        let (b, h, n, d) = (2, 4, 1000, 64);
        let k = tensor([b, h, n, d], [h * n * d, n * d, d, 1], 0);
        let (kmap, _, usable) = gather_maps(&k, &k, r, AttnDtype::F16, true);
        assert!(usable);
        let (shape, strides, tile) = geometry(&kmap);
        assert_eq!(shape, vec![b, h, groups, r, d]);
        assert_eq!(strides, vec![h * n * d, n * d, r * d, d, 1]);
        assert_eq!(tile, vec![1, 1, 64, 1, 64]);
        assert_eq!(kmap.metadata.swizzle, TensorMapSwizzle::B128);
        // One tensor's map (the forward's queries) is the same view.
        let (qmap, usable) = gather_map_of(&k, r, AttnDtype::F16, true);
        assert!(usable);
        assert_eq!(geometry(&qmap), (shape, strides, tile));
    }

    #[rstest]
    #[case::not_wanted([2, 4, 1000, 64], [256_000, 64_000, 64, 1], 0, false)]
    #[case::rows_not_in_16_bytes([1, 1, 10, 64], [1000, 1000, 100, 1], 0, true)]
    #[case::start_not_16_byte_aligned([1, 1, 10, 64], [640, 640, 64, 1], 8, true)]
    fn otherwise_one_row_stand_ins(
        #[case] shape: [usize; 4],
        #[case] strides: [usize; 4],
        #[case] offset: u64,
        #[case] wanted: bool,
    ) {
        let k = tensor(shape, strides, offset);
        let (kmap, vmap, usable) = gather_maps(&k, &k, 2, AttnDtype::BF16, wanted);
        assert!(!usable);
        let (qmap, usable) = gather_map_of(&k, 2, AttnDtype::BF16, wanted);
        assert!(!usable);
        for map in [&kmap, &vmap, &qmap] {
            let (shape, _, tile) = geometry(map);
            assert_eq!(shape, vec![1, 1, 1, 1, 8]);
            assert_eq!(tile, vec![1, 1, 1, 1, 8]);
        }
    }
}

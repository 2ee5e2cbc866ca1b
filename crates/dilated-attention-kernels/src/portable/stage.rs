//! Staging of a chunk of gathered keys and values in shared memory, shared by the portable
//! forward and `dQ` kernels.

use cubecl::prelude::*;

use super::CHUNK;
use crate::addressing::{Rows, Tile};

/// Stages the `CHUNK` gathered keys and values of key block `kb` from offset `c0` (strided rows
/// of the tile's segment) in shared memory as f32, and whether each is a present token in
/// `kvalid`. Run by all `block` units of the cube.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_keys<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    mask: &Tensor<u32>,
    ks: &mut [f32],
    vs: &mut [f32],
    kvalid: &mut [u32],
    tile: &Tile,
    kb: usize,
    c0: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] masked: bool,
) {
    let k_base = tile.batch * k.stride(0) + tile.kv_head * k.stride(1);
    let v_base = tile.batch * v.stride(0) + tile.kv_head * v.stride(1);
    let mut e = UNIT_POS as usize;
    while e < CHUNK * head_dim {
        let c = e / head_dim;
        let d = e % head_dim;
        let tk = kb * block + c0 + c;
        let keys = Rows::keys(tile);
        let present = keys.holds(tk) && c0 + c < block;
        // Rows outside the key window read its first key, a row the tensors hold.
        let pk = keys.row(tile, tk);
        ks[e] = f32::cast_from(k[k_base + pk * k.stride(2) + d * k.stride(3)]);
        vs[e] = f32::cast_from(v[v_base + pk * v.stride(2) + d * v.stride(3)]);
        if d == 0 {
            let mut ok = present;
            if comptime!(masked) {
                ok = ok && mask[tile.batch * mask.stride(0) + pk * mask.stride(1)] != 0;
            }
            kvalid[c] = select(ok, 1u32, 0u32);
        }
        e += block;
    }
}

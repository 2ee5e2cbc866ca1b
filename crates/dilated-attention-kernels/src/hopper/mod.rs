//! The Hopper family (CUDA sm_90a): warpgroup MMA (`wgmma.mma_async`) through inline PTX.
//!
//! Built bottom-up and checked on the device at each level: `wgmma` holds the products and
//! the shared-memory descriptors, [`selftest`] proves them on one tile against the host, `ring`
//! holds the producer warp's stages and barriers, `registers` how a moved cube shares its
//! registers, `tiles` the tile addressing and register renamings the kernels share,
//! `pipelined` the settling of products left in flight, `turns` the consumer warpgroups' turns
//! at the tensor cores. `forward` is the warp-specialised attention forward on them (head dims
//! 64 and 128; the default where it applies, see `Sm80Tuning::wgmma_forward`): its `variant`
//! picks the consumer `steps` that `consume` runs, with its wide-store `epilogue` and its tile
//! `schedule` (one cube a tile, or a persistent grid). `backward_dq` and `backward_dkdv` are
//! the backward's two kernels in the same shape (head dims 64 and 128;
//! `Sm80Tuning::wgmma_backward`); `backward_dq_handed` runs `dQ` on the forward's persistent
//! schedule, its tiles handed by the producer (`Sm80Tuning::handed_dq`), and
//! `backward_dkdv_handed` `dK/dV` likewise over the key tiles (`Sm80Tuning::handed_dkdv`).

pub(crate) mod backward_dkdv;
pub(crate) mod backward_dkdv_handed;
pub(crate) mod backward_dq;
pub(crate) mod backward_dq_handed;
mod chained;
mod consume;
mod dkdv_scores;
mod dkdv_step;
mod epilogue;
pub(crate) mod forward;
mod forward_producer;
mod fused_dq;
mod pipelined;
mod ptx;
mod query_tile;
mod registers;
pub(crate) mod ring;
pub(crate) mod schedule;
mod steps;
mod tiles;
pub(crate) mod tma;
mod turns;
mod variant;
pub(crate) mod wgmma;
mod wide_overlap;

pub mod selftest;
#[cfg(feature = "cuda")]
pub mod source;

use cubecl::features::Tma;
use cubecl::prelude::Client;

/// Whether `client`'s device has warpgroup MMA: CUDA on sm_90 or later (the first with TMA).
pub(crate) fn available(client: &Client) -> bool {
    client.features().tma.contains(Tma::Base)
}

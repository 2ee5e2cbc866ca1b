//! The portable family: plain CubeCL, one unit per query (or key) row, f32 accumulation, every
//! runtime and dtype. The fallback everywhere, and what CI runs (WGSL on lavapipe).

pub(crate) mod backward;
pub(crate) mod finite;
pub(crate) mod forward;
mod stage;

/// Keys (or queries) staged per shared-memory step.
pub(crate) const CHUNK: usize = 16;

/// The most shared memory a portable cube takes in bytes (the `dK/dV` kernel's): a chunk's
/// f32 query and `dO` rows, its `L`, `dS` row and liveness flags.
pub(crate) fn shared_bytes(head_dim: usize) -> usize {
    2 * CHUNK * head_dim * 4 + 3 * CHUNK * 4
}

//! The portable family: plain CubeCL, one unit per query (or key) row, f32 accumulation, every
//! runtime and dtype. The fallback everywhere, and what CI runs (WGSL on lavapipe).

pub(crate) mod backward;
pub(crate) mod forward;
mod stage;

/// Keys (or queries) staged per shared-memory step.
pub(crate) const CHUNK: usize = 16;

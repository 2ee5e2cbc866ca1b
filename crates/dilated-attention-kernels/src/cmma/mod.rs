//! The cmma family: tensor cores through CubeCL's `cmma` (16×16×16 f16/bf16 into f32) on
//! 32-wide planes — the family for runtimes with cooperative matrices but no manual MMA.

pub(crate) mod backward;
pub(crate) mod backward_dkdv;
pub(crate) mod backward_dq;
pub(crate) mod forward;

//! The sm80 family: Ampere-style tensor-core kernels on manual MMA (`mma.sync.m16n8k16`,
//! `ldmatrix`, `cp.async`; CUDA sm_80 and later), FlashAttention-2's register layout.

pub(crate) mod backward_dkdv;
pub(crate) mod backward_dq;
pub(crate) mod forward;
pub(crate) mod grads;
pub(crate) mod mma;
pub(crate) mod rows;

//! Reference implementations in plain Burn tensor ops: they run on every device and autodiff
//! differentiates them.
//!
//! - [`naive_attention`]: dense multiplicity matrix, the oracle for small `n`;
//! - [`reference_attention`]: blockwise over the layout with an online softmax; the fallback on
//!   devices without kernels and the oracle of the kernels.

mod blockwise;
mod naive;

pub use blockwise::{ReferencePlan, reference_attention};
pub use naive::{log_multiplicity, naive_attention};

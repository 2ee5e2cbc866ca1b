//! What every launch takes: validated device tensors, the problem's static configuration, a
//! head class's layout and the token window of a ring step; and what every kernel reads
//! (`Operands`, `GradOperands`, `Pass`).
//!
//! Everything here is checked when it is built — a [`TensorRef`] holds the elements its shape
//! and strides reach, a [`ClassArgs`] holds a well-formed layout — so the launchers only check
//! that the pieces agree with each other.

mod config;
mod layout;
mod operands;
mod tensor;
mod window;

pub use config::{AttnDtype, KernelConfig, MAX_BLOCK, SUPPORTED_HEAD_DIMS};
pub use layout::{ClassArgs, ClassCsr, ClassParams};
pub(crate) use operands::{GradOperands, GradOperandsLaunch, Operands, OperandsLaunch, Pass};
pub use tensor::TensorRef;
pub use window::Window;

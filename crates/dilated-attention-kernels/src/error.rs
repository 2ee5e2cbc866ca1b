//! Errors of the kernel launch API.

use core::fmt;

/// Why a kernel could not run.
#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// An argument has the wrong shape or size.
    Shape {
        /// The argument.
        arg: &'static str,
        /// What was expected.
        expected: String,
    },
    /// The kernel does not support this configuration.
    Unsupported {
        /// The field at fault (`head_dim`, `block_size`, ...).
        field: &'static str,
        /// What is supported.
        rule: String,
    },
    /// The runtime reported a failure (compilation, launch or read-back).
    Runtime {
        /// The runtime's message.
        message: String,
    },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape { arg, expected } => write!(f, "{arg}: expected {expected}"),
            Self::Unsupported { field, rule } => write!(f, "{field}: unsupported, {rule}"),
            Self::Runtime { message } => write!(f, "runtime: {message}"),
        }
    }
}

impl std::error::Error for KernelError {}

//! Errors of the kernel launch API.

/// Why a kernel could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// An argument has the wrong shape, strides or size.
    #[error("{arg}: expected {expected}")]
    Shape {
        /// The argument.
        arg: &'static str,
        /// What was expected.
        expected: String,
    },
    /// The kernels do not support this configuration on this device.
    #[error("{field}: unsupported, {rule}")]
    Unsupported {
        /// The field at fault (`head_dim`, `block_size`, `dtype`, `strategy`, ...).
        field: &'static str,
        /// What is supported.
        rule: String,
    },
    /// The runtime reported a failure (compilation, launch or read-back).
    #[error("runtime: {message}")]
    Runtime {
        /// The runtime's message.
        message: String,
    },
}

impl KernelError {
    pub(crate) fn shape(arg: &'static str, expected: impl Into<String>) -> Self {
        Self::Shape {
            arg,
            expected: expected.into(),
        }
    }

    pub(crate) fn unsupported(field: &'static str, rule: impl Into<String>) -> Self {
        Self::Unsupported {
            field,
            rule: rule.into(),
        }
    }
}

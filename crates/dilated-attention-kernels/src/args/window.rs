//! The token window of a ring step.

use crate::KernelError;

/// The raw token ranges of a windowed launch (a ring step): the query tensors hold the rows of
/// tokens `q_start..q_end`, the key/value tensors (and the mask) those of `k_start..k_end`,
/// and the launch computes those queries against those keys only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First query token.
    pub q_start: usize,
    /// End of the query tokens.
    pub q_end: usize,
    /// First key token.
    pub k_start: usize,
    /// End of the key tokens.
    pub k_end: usize,
}

impl Window {
    /// Query rows the window holds.
    pub fn queries(&self) -> usize {
        self.q_end - self.q_start
    }

    /// Key rows the window holds.
    pub fn keys(&self) -> usize {
        self.k_end - self.k_start
    }

    /// Checks that both ranges are ordered and inside `0..n`.
    pub fn check(&self, n: usize) -> Result<(), KernelError> {
        if self.q_start <= self.q_end
            && self.q_end <= n
            && self.k_start <= self.k_end
            && self.k_end <= n
        {
            Ok(())
        } else {
            Err(KernelError::shape(
                "window",
                format!("ordered token ranges inside 0..{n}, got {self:?}"),
            ))
        }
    }

    /// `(query rows, key rows)` of a launch over `n` tokens with this window, or without one.
    pub fn rows(window: Option<Window>, n: usize) -> (usize, usize) {
        window.map_or((n, n), |w| (w.queries(), w.keys()))
    }
}

//! A head class's layout: its typed parameters ([`ClassParams`]), its rows of key-block runs on
//! the host ([`ClassCsr`], checked) and on the device ([`ClassArgs`]).
//!
//! A head class is the set of heads of one branch that select the same tokens (same offset
//! `h mod r`): they share one layout. Its rows are the query blocks of a full segment, then
//! those of the tail segment (the last, shorter one), each a list of runs of consecutive key
//! blocks.

use cubecl::prelude::*;

use super::{TensorRef, Window};
use crate::KernelError;
use crate::addressing::param;

/// The parameters of a head class, as the kernels decode them (`addressing::locate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClassParams {
    /// Segment length `w` of the branch in raw tokens.
    pub segment_length: usize,
    /// Dilation rate `r` of the branch.
    pub dilation: usize,
    /// Offset of the class: its first head, and its first selected token in each segment.
    pub offset: usize,
    /// Segments over the sequence that hold tokens of the class (the last may be a shorter
    /// tail; a tail without tokens of the class is left out).
    pub segments: usize,
    /// Blocks of a full segment (at least 1).
    pub blocks_full: usize,
    /// Selected tokens of a full segment.
    pub tokens_full: usize,
    /// Selected tokens of the tail segment, 0 if every segment is full.
    pub tokens_tail: usize,
    /// Query heads per key/value head.
    pub group: usize,
}

impl ClassParams {
    /// Query-block rows a launch covers (`segments · blocks_full`).
    pub fn rows(&self) -> usize {
        self.segments * self.blocks_full
    }

    /// The words the kernels read, in the order of `addressing::param`, with `window` (or the
    /// whole sequence) in the last four.
    pub(crate) fn words(&self, window: Option<Window>) -> Result<[u32; param::COUNT], KernelError> {
        let mut words = [0u32; param::COUNT];
        let fields = [
            (param::SEGMENT_LENGTH, self.segment_length),
            (param::DILATION, self.dilation),
            (param::OFFSET, self.offset),
            (param::SEGMENTS, self.segments),
            (param::BLOCKS_FULL, self.blocks_full),
            (param::TOKENS_FULL, self.tokens_full),
            (param::TOKENS_TAIL, self.tokens_tail),
            (param::GROUP, self.group),
        ];
        let (q0, q1, k0, k1) = match window {
            Some(w) => (w.q_start, w.q_end, w.k_start, w.k_end),
            None => (0, u32::MAX as usize, 0, u32::MAX as usize),
        };
        let window_fields = [
            (param::Q_START, q0),
            (param::Q_END, q1),
            (param::K_START, k0),
            (param::K_END, k1),
        ];
        for (at, value) in fields.into_iter().chain(window_fields) {
            words[at] = u32::try_from(value).map_err(|_| {
                KernelError::unsupported("n", "class parameters and windows must fit 32 bits")
            })?;
        }
        Ok(words)
    }

    /// The raw position of the last token a launch reads: the last selected token of the last
    /// segment (the tail where `tokens_tail > 0`, else a full one), or `None` without tokens.
    /// A tail segment that holds no token of the class is not counted in `segments`.
    pub fn last_token(&self) -> Option<usize> {
        let last = if self.tokens_tail > 0 {
            self.tokens_tail
        } else {
            self.tokens_full
        };
        (self.segments > 0 && last > 0).then(|| {
            (self.segments - 1) * self.segment_length + self.offset + (last - 1) * self.dilation
        })
    }

    /// Checks the parameters against each other.
    fn check(&self) -> Result<(), KernelError> {
        let bad = |rule: String| Err(KernelError::shape("params", rule));
        if self.dilation == 0 || self.group == 0 || self.blocks_full == 0 {
            return bad(format!(
                "dilation, group and blocks_full >= 1, got {self:?}"
            ));
        }
        if self.tokens_full > self.segment_length || self.tokens_tail > self.tokens_full {
            return bad(format!(
                "tokens_tail <= tokens_full <= segment_length, got {self:?}"
            ));
        }
        if self.tokens_full > 0
            && self.offset + (self.tokens_full - 1) * self.dilation >= self.segment_length
        {
            return bad(format!(
                "a full segment's tokens inside the segment, got {self:?}"
            ));
        }
        Ok(())
    }
}

/// A class's rows on the host in the kernels' compact form: runs of consecutive key blocks.
///
/// Rows `0..blocks_full` of `row_ptr` describe a full segment, rows
/// `blocks_full + 1 .. blocks_full + 1 + blocks_tail` the tail segment; row `q` holds the runs
/// `runs[2·i] .. runs[2·i + 1]` (key blocks `[start, end)`) for `i` in `row_ptr[q]..row_ptr[q+1]`.
/// The transposed form (key block → query blocks, for `dK/dV`) has the same shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCsr {
    row_ptr: Vec<u32>,
    runs: Vec<u32>,
    params: ClassParams,
    block: usize,
}

impl ClassCsr {
    /// Checks `row_ptr: [blocks_full + 1 + blocks_tail + 1]` and `runs: [2 · runs]` against the
    /// blocks of `params` for `block` tokens per block: row pointers ascending and ending at the
    /// run count, every run non-empty and inside its segment's blocks.
    pub fn new(
        row_ptr: Vec<u32>,
        mut runs: Vec<u32>,
        params: &ClassParams,
        block: usize,
    ) -> Result<Self, KernelError> {
        params.check()?;
        let blocks_tail = params.tokens_tail.div_ceil(block);
        let blocks_full = params.blocks_full;
        if params.tokens_full.div_ceil(block) > blocks_full {
            return Err(KernelError::shape(
                "params",
                format!("blocks_full >= tokens_full / block, got {params:?}"),
            ));
        }
        let bad = |what: String| Err(KernelError::shape("row_ptr", what));
        if row_ptr.len() != blocks_full + 1 + blocks_tail + 1 {
            return bad(format!(
                "{} entries (blocks_full + 1 + blocks_tail + 1), got {}",
                blocks_full + blocks_tail + 2,
                row_ptr.len()
            ));
        }
        if !runs.len().is_multiple_of(2) {
            return Err(KernelError::shape("runs", "an even number of entries"));
        }
        let total = (runs.len() / 2) as u32;
        let full = &row_ptr[..=blocks_full];
        let tail = &row_ptr[blocks_full + 1..];
        for (part, blocks) in [(full, blocks_full), (tail, blocks_tail.max(1))] {
            if part.windows(2).any(|w| w[0] > w[1]) || part.iter().any(|&p| p > total) {
                return bad(format!("ascending pointers up to {total}"));
            }
            for r in part[0]..*part.last().unwrap_or(&0) {
                let (start, end) = (runs[2 * r as usize], runs[2 * r as usize + 1]);
                if start >= end || end as usize > blocks {
                    return Err(KernelError::shape(
                        "runs",
                        format!("non-empty runs inside 0..{blocks}, got {start}..{end}"),
                    ));
                }
            }
        }
        if row_ptr[blocks_full] != tail[0] {
            return bad("the tail's rows to start where the full segment's end".into());
        }
        if row_ptr.last() != Some(&total) {
            return bad(format!("the last pointer to be the run count {total}"));
        }
        // The kernels read one run even where there is none.
        if runs.is_empty() {
            runs.extend([0, 0]);
        }
        Ok(Self {
            row_ptr,
            runs,
            params: *params,
            block,
        })
    }
}

impl ClassCsr {
    /// Words (u32) the rows take: pointers and runs.
    pub fn words(&self) -> usize {
        self.row_ptr.len() + self.runs.len()
    }
}

/// One head class on the device: its rows and parameters, ready to launch.
#[derive(Debug, Clone)]
pub struct ClassArgs {
    pub(crate) row_ptr: TensorRef,
    pub(crate) runs: TensorRef,
    pub(crate) params: TensorRef,
    pub(crate) host: ClassParams,
    pub(crate) heads: usize,
    pub(crate) block: usize,
    pub(crate) n: usize,
    pub(crate) window: Option<Window>,
}

impl ClassArgs {
    /// Uploads `csr` with `params` for a class of `heads` heads of a sequence of `n` tokens
    /// whose blocks hold `block` tokens, without a window. `csr` must have been checked
    /// against the same `params` and `block` ([`ClassCsr::new`]).
    pub fn upload(
        client: &Client,
        csr: &ClassCsr,
        params: ClassParams,
        heads: usize,
        block: usize,
        n: usize,
    ) -> Result<Self, KernelError> {
        if csr.params != params || csr.block != block {
            return Err(KernelError::shape(
                "csr",
                "rows checked against the same parameters and block size",
            ));
        }
        if params.last_token().is_some_and(|last| last >= n) {
            return Err(KernelError::shape(
                "params",
                format!("segments whose tokens lie inside 0..{n}, got {params:?}"),
            ));
        }
        let upload = |name, values: &[u32]| {
            TensorRef::contiguous(
                name,
                crate::upload_u32(client, values),
                vec![values.len()],
                4,
            )
        };
        Ok(Self {
            row_ptr: upload("row_ptr", &csr.row_ptr)?,
            runs: upload("runs", &csr.runs)?,
            params: upload("params", &params.words(None)?)?,
            host: params,
            heads,
            block,
            n,
            window: None,
        })
    }

    /// The same class restricted to `window`: the rows are shared, only the parameters are
    /// uploaded anew.
    pub fn with_window(&self, client: &Client, window: Window) -> Result<Self, KernelError> {
        window.check(self.n)?;
        let words = self.host.words(Some(window))?;
        Ok(Self {
            params: TensorRef::contiguous(
                "params",
                crate::upload_u32(client, &words),
                vec![words.len()],
                4,
            )?,
            window: Some(window),
            ..self.clone()
        })
    }

    /// The typed parameters.
    pub fn params(&self) -> &ClassParams {
        &self.host
    }

    /// Heads of the class.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// The window, if the class is restricted to one.
    pub fn window(&self) -> Option<Window> {
        self.window
    }

    /// Query-block rows a launch covers.
    pub fn rows(&self) -> usize {
        self.host.rows()
    }

    /// Tokens of the sequence the layout was built for.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Whether `other` is the same class (its transposed rows, say): same parameters, heads,
    /// block, sequence and window.
    pub(crate) fn matches(&self, other: &ClassArgs) -> bool {
        (self.host, self.heads, self.block, self.n, self.window)
            == (other.host, other.heads, other.block, other.n, other.window)
    }
}

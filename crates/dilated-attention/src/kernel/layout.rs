//! The block layout in the kernels' form: each head class's rows (and transposed rows) as runs
//! of consecutive key blocks, with typed parameters, checked on the host and uploaded once per
//! device.

use std::sync::Arc;

use dilated_attention_kernels::{ClassArgs, ClassCsr, ClassParams, Client, KernelError, Window};

use crate::cache::{BoundedCache, CacheSize};
use crate::layout::{BlockLayout, BlockRows, ClassLayout};

/// A head class in the kernels' form, on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelClassLayout {
    /// Query block → runs of key blocks (forward, `dQ`).
    pub rows: ClassCsr,
    /// Key block → runs of query blocks (`dK/dV`).
    pub cols: ClassCsr,
    /// The class's parameters.
    pub params: ClassParams,
    /// Heads of the class.
    pub heads: usize,
}

impl KernelClassLayout {
    /// Converts `class` of a layout with blocks of `block` tokens, for `group` query heads per
    /// kv head. A tail segment that holds no token of the class is left out.
    pub fn new(class: &ClassLayout, group: usize, block: usize) -> Result<Self, KernelError> {
        let empty_tail = class.tail.as_ref().is_some_and(|t| t.tokens == 0);
        let tail = class.tail.as_ref().filter(|t| t.tokens > 0);
        let segments = if class.full.tokens == 0 {
            0
        } else {
            class.num_segments - usize::from(empty_tail)
        };
        let params = ClassParams {
            segment_length: class.segment_length,
            dilation: class.dilation_rate,
            offset: class.offset,
            segments,
            blocks_full: class.full.blocks.max(1),
            tokens_full: class.full.tokens,
            tokens_tail: tail.map_or(0, |t| t.tokens),
            group,
        };
        let csr = |rows_of: &dyn Fn(&BlockRows) -> BlockRows| {
            let mut row_ptr = Vec::new();
            let mut runs = Vec::new();
            push_runs(&rows_of(&class.full.rows), &mut row_ptr, &mut runs);
            while row_ptr.len() < params.blocks_full + 1 {
                row_ptr.push((runs.len() / 2) as u32);
            }
            match tail {
                Some(tail) => push_runs(&rows_of(&tail.rows), &mut row_ptr, &mut runs),
                None => row_ptr.push((runs.len() / 2) as u32),
            }
            ClassCsr::new(row_ptr, runs, &params, block)
        };
        Ok(Self {
            rows: csr(&|r| r.clone())?,
            cols: csr(&BlockRows::transpose)?,
            params,
            heads: class.heads.len(),
        })
    }
}

/// Appends the rows of `rows` as runs of consecutive key blocks.
fn push_runs(rows: &BlockRows, row_ptr: &mut Vec<u32>, runs: &mut Vec<u32>) {
    row_ptr.push((runs.len() / 2) as u32);
    for q in 0..rows.rows() {
        let row = rows.row(q);
        let mut i = 0;
        while i < row.len() {
            let start = row[i];
            let mut end = start + 1;
            while i + 1 < row.len() && row[i + 1] == end {
                i += 1;
                end += 1;
            }
            runs.extend([start, end]);
            i += 1;
        }
        row_ptr.push((runs.len() / 2) as u32);
    }
}

/// One head class on a device: its rows for the forward and `dQ`, its transposed rows for
/// `dK/dV`.
#[derive(Debug, Clone)]
pub(crate) struct DeviceClass {
    /// Forward rows.
    pub rows: ClassArgs,
    /// Transposed rows.
    pub cols: ClassArgs,
    /// The branch the class belongs to.
    pub branch: usize,
    bytes: usize,
}

impl CacheSize for DeviceClass {
    fn cache_bytes(&self) -> usize {
        self.bytes
    }
}

/// `(n, heads, group, device, window)`.
type DeviceLayoutKey = (usize, usize, usize, String, Option<Window>);

/// Device copies of the kernel layouts, by `(n, heads, group, device, window)`; bounded (see
/// [`crate::cache`]). Windowed entries share the rows of the unwindowed one.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeviceLayoutCache {
    entries: BoundedCache<DeviceLayoutKey, Vec<DeviceClass>>,
}

impl DeviceLayoutCache {
    /// Sets the budget in bytes.
    pub fn set_budget(&self, budget: usize) {
        self.entries.set_budget(budget);
    }

    /// The classes of `layout` on the device of `client` (named `device`), restricted to
    /// `window` if any.
    pub fn get(
        &self,
        client: &Client,
        device: String,
        layout: &BlockLayout,
        group: usize,
        window: Option<Window>,
    ) -> Result<Arc<Vec<DeviceClass>>, KernelError> {
        let key = |window| (layout.n, layout.heads, group, device.clone(), window);
        let whole = self.entries.get_or_try_build(&key(None), || {
            layout
                .classes
                .iter()
                .map(|class| {
                    let host = KernelClassLayout::new(class, group, layout.block_size)?;
                    let upload = |csr: &ClassCsr| {
                        ClassArgs::upload(
                            client,
                            csr,
                            host.params,
                            host.heads,
                            layout.block_size,
                            layout.n,
                        )
                    };
                    Ok(DeviceClass {
                        rows: upload(&host.rows)?,
                        cols: upload(&host.cols)?,
                        branch: class.branch,
                        bytes: 4 * (host.rows.words() + host.cols.words()) + 256,
                    })
                })
                .collect::<Result<Vec<_>, KernelError>>()
        })?;
        let Some(window) = window else {
            return Ok(whole);
        };
        self.entries.get_or_try_build(&key(Some(window)), || {
            whole
                .iter()
                .map(|class| {
                    Ok(DeviceClass {
                        rows: class.rows.with_window(client, window)?,
                        cols: class.cols.with_window(client, window)?,
                        branch: class.branch,
                        bytes: 256,
                    })
                })
                .collect::<Result<Vec<_>, KernelError>>()
        })
    }
}

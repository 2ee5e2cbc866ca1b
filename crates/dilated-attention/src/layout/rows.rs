//! [`BlockRows`]: the kept key blocks of each query block, compressed (CSR).

use serde::{Deserialize, Serialize};

/// Key blocks per query block, compressed: row `q` holds `cols[row_ptr[q]..row_ptr[q + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BlockRows {
    /// `blocks + 1` offsets into `cols`.
    pub row_ptr: Vec<u32>,
    /// Key blocks, ascending inside each row.
    pub cols: Vec<u32>,
}

impl BlockRows {
    /// Number of query-block rows.
    pub fn rows(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }

    /// The key blocks of query block `q` (none past the last row).
    pub fn row(&self, q: usize) -> &[u32] {
        match (self.row_ptr.get(q), self.row_ptr.get(q + 1)) {
            (Some(&start), Some(&end)) => &self.cols[start as usize..end as usize],
            _ => &[],
        }
    }

    /// Whether the pair `(q, k)` is kept.
    pub fn contains(&self, q: usize, k: usize) -> bool {
        q < self.rows() && self.row(q).binary_search(&(k as u32)).is_ok()
    }

    /// Number of kept block pairs.
    pub fn nnz(&self) -> usize {
        self.cols.len()
    }

    /// Length of the longest row.
    pub fn max_row(&self) -> usize {
        (0..self.rows())
            .map(|q| self.row(q).len())
            .max()
            .unwrap_or(0)
    }

    /// The transposed layout: for each key block, the query blocks that see it.
    pub fn transpose(&self) -> BlockRows {
        let n = self.rows();
        let mut counts = vec![0u32; n + 1];
        for &k in &self.cols {
            counts[k as usize + 1] += 1;
        }
        for i in 0..n {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut cols = vec![0u32; self.cols.len()];
        for q in 0..n {
            for &k in self.row(q) {
                cols[next[k as usize] as usize] = q as u32;
                next[k as usize] += 1;
            }
        }
        BlockRows {
            row_ptr: counts,
            cols,
        }
    }

    pub(super) fn from_rows(rows: impl IntoIterator<Item = Vec<u32>>) -> Self {
        let mut out = BlockRows {
            row_ptr: vec![0],
            cols: Vec::new(),
        };
        for mut row in rows {
            row.sort_unstable();
            row.dedup();
            out.cols.extend_from_slice(&row);
            out.row_ptr.push(out.cols.len() as u32);
        }
        out
    }
}

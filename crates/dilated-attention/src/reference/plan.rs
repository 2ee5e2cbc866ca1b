//! The host-side index plans of the blockwise reference (`super::blockwise`): for each head
//! class, which rows of `q`, `k`, `v` it gathers, the key blocks of each query-block row in
//! slot order (longest rows first), and where each output row goes back. Derived once from a
//! layout per `(n, heads)` and cached.

use std::sync::Arc;

use crate::layout::{BlockLayout, ClassLayout};

/// Host-side index plan of one head class, derived once from the layout.
///
/// Only *active* rows (query blocks holding at least one output query) and *referenced* key
/// blocks (holding at least one readable key) are gathered, so a plan restricted to a chunk of
/// queries and a chunk of keys (a ring step) costs memory in proportion to those chunks.
#[derive(Debug, Clone)]
pub(super) struct ClassPlan {
    /// Query heads of the class.
    pub(super) heads: Vec<i64>,
    /// Active query-block rows, ordered by decreasing number of key blocks.
    pub(super) active: usize,
    /// `[active × block]`: row of `q` for each gathered query slot (0 for padding slots).
    pub(super) q_gather: Vec<i64>,
    /// `[active × block]`: the padding slots among them (past the segment, or not a query of
    /// the plan): they see no key, so they neither carry a value nor give row 0 a gradient.
    pub(super) q_filler: Vec<bool>,
    /// Referenced key blocks.
    pub(super) key_blocks: usize,
    /// `[key_blocks × block]`: row of `k`/`v` for each gathered key slot (0 for padding).
    pub(super) k_gather: Vec<i64>,
    /// `[key_blocks × block]`: 1 where the slot is a key this plan may read.
    pub(super) k_valid: Vec<f32>,
    /// Per slot `j`: the compact key block of each of the first `rows_j` ordered rows, and
    /// whether it is the row's own (diagonal) block.
    pub(super) slots: Vec<(Vec<i64>, Vec<bool>)>,
    /// For each output row: its gathered slot, or `active × block` (a zero row) if the class
    /// skips it.
    pub(super) scatter: Vec<i64>,
}

impl ClassPlan {
    /// `q_index[p]` / `k_index[p]`: the row of token position `p` in the `q` / `k` tensors the
    /// plan will read, or -1 when the plan must not use it.
    fn new(class: &ClassLayout, bs: usize, q_index: &[i64], k_index: &[i64], n_out: usize) -> Self {
        let per_segment = class.full.blocks;
        let rows = class.num_segments * per_segment;
        // Token position of gathered slot `c` of global block `b`, if it is a real token.
        let token = |b: usize, c: usize| {
            let (seg, t) = (b / per_segment.max(1), (b % per_segment.max(1)) * bs + c);
            (t < class.segment(seg).tokens).then(|| class.position(seg, t))
        };
        let readable: Vec<bool> = (0..rows)
            .map(|b| (0..bs).any(|c| token(b, c).is_some_and(|p| k_index[p] >= 0)))
            .collect();
        let mut row_blocks: Vec<Option<Vec<usize>>> = vec![None; rows];
        for seg in 0..class.num_segments {
            let shape = class.segment(seg);
            for q in 0..shape.blocks {
                let b = seg * per_segment + q;
                if (0..bs).any(|c| token(b, c).is_some_and(|p| q_index[p] >= 0)) {
                    let keys = shape
                        .rows
                        .row(q)
                        .iter()
                        .map(|&k| seg * per_segment + k as usize);
                    row_blocks[b] = Some(keys.filter(|&k| readable[k]).collect());
                }
            }
        }
        let mut order: Vec<usize> = (0..rows).filter(|&b| row_blocks[b].is_some()).collect();
        let degree = |b: usize| row_blocks[b].as_ref().map_or(0, Vec::len);
        order.sort_by_key(|&b| core::cmp::Reverse(degree(b)));
        let mut rank = vec![usize::MAX; rows];
        for (i, &b) in order.iter().enumerate() {
            rank[b] = i;
        }
        let mut compact = vec![usize::MAX; rows];
        let mut k_gather = Vec::new();
        let mut k_valid = Vec::new();
        let mut key_blocks = 0;
        for &b in &order {
            for &k in row_blocks[b].as_ref().expect("active row") {
                if compact[k] == usize::MAX {
                    compact[k] = key_blocks;
                    key_blocks += 1;
                    for c in 0..bs {
                        let row = token(k, c).map_or(-1, |p| k_index[p]);
                        k_gather.push(row.max(0));
                        k_valid.push(if row >= 0 { 1.0 } else { 0.0 });
                    }
                }
            }
        }
        let q_slot = |(b, c)| token(b, c).map_or(-1, |p| q_index[p]);
        let q_rows: Vec<i64> = order
            .iter()
            .flat_map(|&b| (0..bs).map(move |c| (b, c)))
            .map(q_slot)
            .collect();
        let q_filler = q_rows.iter().map(|&r| r < 0).collect();
        let q_gather = q_rows.iter().map(|&r| r.max(0)).collect();
        let depth = order.first().map_or(0, |&b| degree(b));
        let slots = (0..depth)
            .map(|j| {
                order
                    .iter()
                    .take_while(|&&b| degree(b) > j)
                    .map(|&b| {
                        let k = row_blocks[b].as_ref().expect("active row")[j];
                        (compact[k] as i64, k == b)
                    })
                    .unzip()
            })
            .collect();
        let mut scatter = vec![(order.len() * bs) as i64; n_out];
        for (p, &o) in q_index.iter().enumerate() {
            if o >= 0
                && let Some((seg, t)) = class.gathered(p)
            {
                let b = seg * per_segment + t / bs;
                scatter[o as usize] = (rank[b] * bs + t % bs) as i64;
            }
        }
        Self {
            heads: class.heads.iter().map(|&h| h as i64).collect(),
            active: order.len(),
            q_gather,
            q_filler,
            key_blocks,
            k_gather,
            k_valid,
            slots,
            scatter,
        }
    }
}

/// A layout together with the index plans the reference path needs; build it once per
/// `(n, heads)` and reuse it.
#[derive(Debug, Clone)]
pub struct ReferencePlan {
    /// The layout the plan was built from.
    pub layout: Arc<BlockLayout>,
    /// Number of query rows the plan produces.
    pub queries: usize,
    pub(super) classes: Vec<ClassPlan>,
}

impl ReferencePlan {
    /// Derives the index plans of `layout` (every query, every key).
    pub fn new(layout: Arc<BlockLayout>) -> Self {
        let all: Vec<i64> = (0..layout.n as i64).collect();
        Self::with_indices(layout, &all, &all)
    }

    /// Plans restricted to the query tokens at `queries` and the key tokens at `keys` (token
    /// positions): the attention then reads `q: [batch, heads, queries.len(), head_dim]` and
    /// `k, v: [batch, kv_heads, keys.len(), head_dim]` holding those rows in that order, and
    /// produces the partial result of those queries over those keys (a ring step).
    pub fn restricted(layout: Arc<BlockLayout>, queries: &[usize], keys: &[usize]) -> Self {
        let index_of = |tokens: &[usize]| {
            let mut index = vec![-1i64; layout.n];
            for (row, &p) in tokens.iter().enumerate() {
                index[p] = row as i64;
            }
            index
        };
        let (q_index, k_index) = (index_of(queries), index_of(keys));
        Self::with_indices(layout, &q_index, &k_index)
    }

    fn with_indices(layout: Arc<BlockLayout>, q_index: &[i64], k_index: &[i64]) -> Self {
        let queries = q_index.iter().filter(|&&i| i >= 0).count();
        let classes = layout
            .classes
            .iter()
            .map(|c| ClassPlan::new(c, layout.block_size, q_index, k_index, queries))
            .collect();
        Self {
            layout,
            queries,
            classes,
        }
    }
}

impl crate::cache::CacheSize for ReferencePlan {
    fn cache_bytes(&self) -> usize {
        self.classes
            .iter()
            .map(|c| {
                8 * (c.heads.len() + c.q_gather.len() + c.k_gather.len() + c.scatter.len())
                    + 4 * c.k_valid.len()
                    + c.q_filler.len()
                    + c.slots
                        .iter()
                        .map(|(k, d)| 8 * k.len() + d.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
            + size_of::<Self>()
    }
}

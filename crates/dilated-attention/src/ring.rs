//! Ring execution of the schedule: sequence-parallel attention over `P` holders.
//!
//! Holder `r` keeps the query rows it owns ([`Partition`]) on its device; the key/value chunks
//! travel around the ring (`Tensor::to_device`, so autodiff carries their gradients back to
//! the owners). At step `t` holder `r` computes its queries against the chunk of holder
//! `(r - t) mod P` with a plan restricted to those rows — a step with no active block pair is
//! skipped — and each step's partial `(out, lse)` is merged into the holder's running result
//! with [`merge_lse`](crate::merge::merge_lse), the same function that merges branches. With `P` copies of one device
//! this is chunked execution on a single device (attention memory follows the chunks); with `P`
//! devices it is the ring across them, through the same code.
//!
//! A step runs through the CubeCL kernels where the module has them: a holder's tokens form one
//! contiguous piece (`contiguous`) or two (`zigzag`), and each pair of a query piece and a key
//! piece is one windowed kernel call (the kernels read only those rows; partial results over
//! the key pieces are merged like the steps). `striped` holders have `n / P` pieces of one
//! token each; their steps, and any step the kernels cannot serve, use the reference path.

use std::ops::Range;
use std::sync::Arc;

use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use crate::error::{AttentionError, KernelUnavailable, Result};
use crate::inputs::AttentionShape;
use crate::layout::BlockLayout;
use crate::merge::merge_parts;
use crate::reference::{ReferencePlan, reference_attention};
use crate::schedule::{Partition, RingSchedule, RingStep};

/// A schedule with the tokens and pieces of its holders, built once per
/// `(n, heads, P, partition)`. The reference path's plans of its steps are built only for the
/// steps that run there (the module caches them).
#[derive(Debug)]
pub struct RingPlan {
    /// The schedule (per-step work, skipped steps, bytes).
    pub schedule: RingSchedule,
    /// Token positions owned by each holder, ascending.
    pub tokens: Vec<Vec<usize>>,
    /// Each holder's tokens as maximal runs of consecutive positions.
    pub pieces: Vec<Vec<Piece>>,
    /// `active[r][s]`: whether holder `r`'s queries meet holder `s`'s keys anywhere.
    active: Vec<Vec<bool>>,
}

impl RingPlan {
    /// Plans the ring of `layout` over `holders` holders.
    pub fn new(layout: &BlockLayout, holders: usize, partition: Partition) -> Result<Self> {
        let schedule = RingSchedule::new(layout, holders, partition, 1, 1, 1)?;
        let n = layout.n;
        let mut tokens = vec![Vec::new(); holders];
        for i in 0..n {
            tokens[partition.owner_of(i, n, holders)].push(i);
        }
        let mut active = vec![vec![false; holders]; holders];
        for (r, steps) in schedule.steps.iter().enumerate() {
            for step in steps {
                active[r][step.kv_owner] = !step.skipped();
            }
        }
        let pieces = tokens.iter().map(|t| Piece::runs(t)).collect();
        Ok(Self {
            schedule,
            tokens,
            pieces,
            active,
        })
    }

    /// The reference path's plan of holder `r`'s queries against holder `s`'s keys.
    pub fn step_plan(&self, layout: Arc<BlockLayout>, r: usize, s: usize) -> ReferencePlan {
        ReferencePlan::restricted(layout, &self.tokens[r], &self.tokens[s])
    }
}

impl crate::cache::CacheSize for RingPlan {
    fn cache_bytes(&self) -> usize {
        let tokens: usize = self.tokens.iter().map(Vec::len).sum();
        let holders = self.tokens.len();
        tokens * size_of::<usize>()
            + holders * holders * (size_of::<RingStep>() + 1)
            + self.pieces.iter().map(Vec::len).sum::<usize>() * size_of::<Piece>()
    }
}

/// A run of consecutive token positions in a holder's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// First row of the run in the holder's tensors.
    pub row: usize,
    /// Its token positions.
    pub tokens: Range<usize>,
}

impl Piece {
    /// The maximal runs of `tokens` (ascending positions).
    fn runs(tokens: &[usize]) -> Vec<Piece> {
        let mut pieces: Vec<Piece> = Vec::new();
        for (row, &p) in tokens.iter().enumerate() {
            match pieces.last_mut() {
                Some(last) if last.tokens.end == p => last.tokens.end += 1,
                _ => pieces.push(Piece {
                    row,
                    tokens: p..p + 1,
                }),
            }
        }
        pieces
    }

    fn rows(&self) -> Range<usize> {
        self.row..self.row + self.tokens.len()
    }
}

/// A ring step through the kernels for one query piece and one key piece:
/// `(q, k, v, mask, query tokens, key tokens) → (out, lse)` with `q: [batch, heads, queries,
/// head_dim]`, `k, v: [batch, kv_heads, keys, head_dim]`, `mask: [batch, keys]` (`true` =
/// padded); `Err` says why the kernels cannot serve it (nothing ran then).
pub type StepKernel = dyn Fn(
    &Tensor<4>,
    &Tensor<4>,
    &Tensor<4>,
    Option<&Tensor<2, Bool>>,
    Range<usize>,
    Range<usize>,
) -> std::result::Result<(Tensor<4>, Tensor<3>), KernelUnavailable>;

/// How a ring runs its steps besides the reference path.
pub struct RingRunner<'a> {
    /// Runs one piece pair through the kernels, if the module has them.
    pub kernels: Option<&'a StepKernel>,
    /// Decides what a step that the kernels cannot serve does: `Ok` runs it on the reference
    /// path, `Err` stops the ring with that error (the module's kernel policy).
    pub fallback: &'a dyn Fn(KernelUnavailable) -> Result<()>,
    /// The reference plan of holder `r`'s step against holder `s`'s chunk (cached by the
    /// module).
    pub reference_plan: &'a dyn Fn(usize, usize) -> Result<Arc<ReferencePlan>>,
}

/// Most pieces per holder for which steps go through the kernels (zigzag has two).
const KERNEL_PIECES: usize = 2;

/// Holder `r`'s step against the chunk `(k, v, mask)` of holder `s` through the kernels: one
/// call per query piece and key piece, merged over the key pieces and concatenated over the
/// query pieces (the holder's rows are its pieces in order).
fn kernel_step(
    kernels: &StepKernel,
    plan: &RingPlan,
    (r, s): (usize, usize),
    q: &Tensor<4>,
    (k, v, mask): (&Tensor<4>, &Tensor<4>, Option<&Tensor<2, Bool>>),
) -> std::result::Result<(Tensor<4>, Tensor<3>), KernelUnavailable> {
    let (q_pieces, k_pieces) = (&plan.pieces[r], &plan.pieces[s]);
    if q_pieces.len() > KERNEL_PIECES || k_pieces.len() > KERNEL_PIECES {
        return Err(KernelUnavailable::StripedRing);
    }
    let (mut outs, mut lses) = (Vec::new(), Vec::new());
    for qp in q_pieces {
        let q_rows = q.clone().slice_dim(2, qp.rows());
        let mut parts = Vec::with_capacity(k_pieces.len());
        for kp in k_pieces {
            let rows = kp.rows();
            let m = mask.map(|m| m.clone().slice_dim(1, rows.clone()));
            parts.push(kernels(
                &q_rows,
                &k.clone().slice_dim(2, rows.clone()),
                &v.clone().slice_dim(2, rows),
                m.as_ref(),
                qp.tokens.clone(),
                kp.tokens.clone(),
            )?);
        }
        let (o, l) = merge_parts(parts);
        outs.push(o);
        lses.push(l);
    }
    Ok(if outs.len() == 1 {
        (outs.remove(0), lses.remove(0))
    } else {
        (Tensor::cat(outs, 2), Tensor::cat(lses, 2))
    })
}

fn rows(tokens: &[usize], device: &Device) -> Tensor<1, Int> {
    let idx: Vec<i64> = tokens.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(idx, [tokens.len()]), device)
}

/// The per-holder result of a ring: holder `r`'s output rows live on `devices[r]`.
#[derive(Debug, Clone)]
pub struct RingOutput {
    /// Per holder: `out: [batch, heads, n_r, head_dim]` on the holder's device.
    pub outs: Vec<Tensor<4>>,
    /// Per holder: `lse: [batch, heads, n_r]` (f32) on the holder's device.
    pub lses: Vec<Tensor<3>>,
    /// Per holder: the token positions of its rows, ascending.
    pub tokens: Vec<Vec<usize>>,
    /// Steps (holder × visiting chunk) that ran through the CubeCL kernels.
    pub kernel_steps: usize,
    /// Steps that ran through the reference path (skipped steps count in neither).
    pub reference_steps: usize,
}

impl RingOutput {
    /// Gathers the holders' rows, in token order, on `device`:
    /// `out: [batch, heads, n, head_dim]`, `lse: [batch, heads, n]`.
    pub fn gather(self, device: &Device) -> (Tensor<4>, Tensor<3>) {
        let order: Vec<usize> = self.tokens.iter().flatten().copied().collect();
        let mut inverse = vec![0usize; order.len()];
        for (row, &p) in order.iter().enumerate() {
            inverse[p] = row;
        }
        let inverse = rows(&inverse, device);
        let out = Tensor::cat(
            self.outs.into_iter().map(|o| o.to_device(device)).collect(),
            2,
        );
        let lse = Tensor::cat(
            self.lses.into_iter().map(|l| l.to_device(device)).collect(),
            2,
        );
        (out.select(2, inverse.clone()), lse.select(2, inverse))
    }
}

/// Runs attention through the ring: chunk `r` on `devices[r]` (repeat one device for chunked
/// execution on it).
///
/// - `q: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]`, `mask: [batch, n]`,
///   all on one device, already checked ([`crate::inputs::check_inputs`]);
/// - `plan` built for this layout and `devices.len()` holders;
/// - `runner`: the kernels for a step's piece pairs (see [`StepKernel`]), the policy for steps
///   they cannot serve, and the reference plans of the steps that run there.
#[allow(clippy::too_many_arguments)]
pub fn ring_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<2, Bool>>,
    shape: AttentionShape,
    plan: &RingPlan,
    scale: f64,
    devices: &[Device],
    runner: &RingRunner<'_>,
) -> Result<RingOutput> {
    let p = plan.tokens.len();
    if devices.len() != p {
        return Err(AttentionError::Invalid {
            field: "devices",
            rule: format!(
                "the ring plan has {p} holders, {} devices were given",
                devices.len()
            ),
        });
    }
    let source = q.device();
    // Each holder's own rows, on its device.
    let chunk = |t: &Tensor<4>, r: usize| {
        t.clone()
            .select(2, rows(&plan.tokens[r], &source))
            .to_device(&devices[r])
    };
    let q_chunks: Vec<Tensor<4>> = (0..p).map(|r| chunk(&q, r)).collect();
    let mut kv: Vec<(Tensor<4>, Tensor<4>, Option<Tensor<2, Bool>>)> = (0..p)
        .map(|r| {
            let m = mask.as_ref().map(|m| {
                m.clone()
                    .select(1, rows(&plan.tokens[r], &source))
                    .to_device(&devices[r])
            });
            (chunk(&k, r), chunk(&v, r), m)
        })
        .collect();
    // Each holder's running result, merged step by step so that only one partial result per
    // holder is alive at a time.
    let mut partial: Vec<Option<(Tensor<4>, Tensor<3>)>> = vec![None; p];
    let (mut kernel_steps, mut reference_steps) = (0, 0);
    for step in 0..p {
        for (r, running) in partial.iter_mut().enumerate() {
            // At step t holder r holds the chunk that started on holder (r - t) mod P.
            let s = (r + p - step) % p;
            if !plan.active[r][s] {
                continue;
            }
            let (k_s, v_s, m_s) = &kv[r];
            let local = AttentionShape {
                n: plan.tokens[r].len(),
                ..shape
            };
            let through_kernels = runner.kernels.map(|kernels| {
                kernel_step(
                    kernels,
                    plan,
                    (r, s),
                    &q_chunks[r],
                    (k_s, v_s, m_s.as_ref()),
                )
            });
            let step_result = match through_kernels {
                Some(Ok(result)) => {
                    kernel_steps += 1;
                    result
                }
                failed => {
                    if let Some(Err(reason)) = failed {
                        (runner.fallback)(reason)?;
                    }
                    reference_steps += 1;
                    reference_attention(
                        q_chunks[r].clone(),
                        k_s.clone(),
                        v_s.clone(),
                        m_s.clone(),
                        local,
                        &*(runner.reference_plan)(r, s)?,
                        scale,
                    )
                }
            };
            *running = Some(match running.take() {
                Some(previous) => merge_parts(vec![previous, step_result]),
                None => step_result,
            });
        }
        // Pass every chunk to the next holder.
        if step + 1 < p {
            kv.rotate_right(1);
            for (r, (k_c, v_c, m_c)) in kv.iter_mut().enumerate() {
                *k_c = k_c.clone().to_device(&devices[r]);
                *v_c = v_c.clone().to_device(&devices[r]);
                *m_c = m_c.take().map(|m| m.to_device(&devices[r]));
            }
        }
    }
    let dtype = q.dtype();
    let (mut outs, mut lses) = (Vec::with_capacity(p), Vec::with_capacity(p));
    for (r, running) in partial.into_iter().enumerate() {
        let n_r = plan.tokens[r].len();
        let (o, l) = running.unwrap_or_else(|| {
            (
                Tensor::zeros(
                    [shape.batch, shape.heads, n_r, shape.head_dim],
                    (&devices[r], dtype),
                ),
                Tensor::full(
                    [shape.batch, shape.heads, n_r],
                    f32::NEG_INFINITY,
                    (&devices[r], DType::F32),
                ),
            )
        });
        outs.push(o);
        lses.push(l);
    }
    Ok(RingOutput {
        outs,
        lses,
        tokens: plan.tokens.clone(),
        kernel_steps,
        reference_steps,
    })
}

//! Ring execution of the schedule: sequence-parallel attention over `P` holders.
//!
//! Holder `r` keeps the query rows it owns ([`Partition`]) on its device; the key/value chunks
//! travel around the ring (`Tensor::to_device`, so autodiff carries their gradients back to
//! the owners). At step `t` holder `r` computes its queries against the chunk of holder
//! `(r - t) mod P` with a plan restricted to those rows — a step with no active block pair is
//! skipped — and each step's partial `(out, lse)` is merged into the holder's running result
//! with [`merge_lse`], the same function that merges branches. With `P` copies of one device
//! this is chunked execution on a single device (attention memory follows the chunks); with `P`
//! devices it is the ring across them, through the same code.

use std::sync::Arc;

use burn::tensor::{Bool, DType, Device, Int, Tensor, TensorData};

use crate::error::{AttentionError, Result};
use crate::inputs::AttentionShape;
use crate::layout::BlockLayout;
use crate::merge::merge_lse;
use crate::reference::{ReferencePlan, reference_attention};
use crate::schedule::{Partition, RingSchedule};

/// A schedule with the restricted plans of its non-empty steps, built once per
/// `(n, heads, P, partition)`.
#[derive(Debug)]
pub struct RingPlan {
    /// The schedule (per-step work, skipped steps, bytes).
    pub schedule: RingSchedule,
    /// Token positions owned by each holder, ascending.
    pub tokens: Vec<Vec<usize>>,
    /// `plans[r][s]`: holder `r`'s queries against holder `s`'s keys, `None` when empty.
    plans: Vec<Vec<Option<Arc<ReferencePlan>>>>,
}

impl RingPlan {
    /// Plans the ring of `layout` over `holders` holders.
    pub fn new(layout: &BlockLayout, holders: usize, partition: Partition) -> Result<Self> {
        let schedule = RingSchedule::new(layout, holders, partition, 1, 1, 1)?;
        let n = layout.n;
        let mut tokens = vec![Vec::new(); holders];
        for i in 0..n {
            tokens[partition.owner(i, n, holders)].push(i);
        }
        let plans = (0..holders)
            .map(|r| {
                (0..holders)
                    .map(|s| {
                        let step = schedule.steps[r]
                            .iter()
                            .find(|st| st.kv_owner == s)
                            .expect("every chunk visits every holder");
                        (!step.skipped()).then(|| {
                            Arc::new(ReferencePlan::restricted(
                                layout.clone(),
                                &tokens[r],
                                &tokens[s],
                            ))
                        })
                    })
                    .collect()
            })
            .collect();
        Ok(Self {
            schedule,
            tokens,
            plans,
        })
    }
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
/// - `plan` built for this layout and `devices.len()` holders.
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
    for step in 0..p {
        for (r, running) in partial.iter_mut().enumerate() {
            // At step t holder r holds the chunk that started on holder (r - t) mod P.
            let s = (r + p - step) % p;
            let Some(step_plan) = &plan.plans[r][s] else {
                continue;
            };
            let (k_s, v_s, m_s) = &kv[r];
            let local = AttentionShape {
                n: plan.tokens[r].len(),
                ..shape
            };
            let step_result = reference_attention(
                q_chunks[r].clone(),
                k_s.clone(),
                v_s.clone(),
                m_s.clone(),
                local,
                step_plan,
                scale,
            );
            *running = Some(match running.take() {
                Some(previous) => merge_lse(vec![previous, step_result]),
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
    })
}

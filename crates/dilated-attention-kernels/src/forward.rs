//! Forward of block-sparse dilated flash attention for one head class of one branch.
//!
//! Math: for a query token `i` of the class (segment `g`, gathered index `t_i`), over the key
//! blocks `kb` its row keeps,
//! `out_i = Σ_j e^{x_ij} v_j / Σ_j e^{x_ij}`, `lse_i = log Σ_j e^{x_ij}`, `x_ij = scale · q_i·k_j`,
//! with `j` running over the gathered keys `t_j ∈ [kb·B, (kb+1)·B)` of the same segment that are
//! real tokens, present in the padding mask and (causal) `t_j <= t_i`. A row with no key writes
//! `out = 0`, `lse = -inf`. Accumulation and softmax in f32; `out` in the input dtype.
//!
//! Shapes: `q, out: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]` (any
//! strides), `lse: [batch, heads, n]` f32, `mask: [batch, n]` u32 (1 = present).
//! Gathered token `t` of segment `g` is raw position `g·w + s + t·r`: rows are read with stride
//! `r · row_stride` (strided gather), never masked out of a dense segment.
//!
//! Grid: `x` = query-block rows of all segments (`segments · blocks_full`), `y` = the class's
//! heads (`head = s + r·y`), `z` = batch. One cube of `B` units per query block; unit `u` owns
//! query row `u`, keeps `q` and the accumulator in registers and walks the key blocks of its
//! row in chunks of `CHUNK` keys staged in shared memory.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::KernelError;

/// Keys staged per shared-memory step.
const CHUNK: usize = 16;

/// Head dims the forward kernel is compiled for.
pub const SUPPORTED_HEAD_DIMS: [usize; 4] = [32, 64, 96, 128];

/// Largest block size of the portable kernel (one unit per query row).
pub const MAX_BLOCK: usize = 256;

/// Where a cube works: its query-block row of a head class (grid `x` = row, `y` = the class's
/// head, `z` = batch), decoded from the class parameters.
///
/// A windowed launch (a ring step) reads query rows `q_origin..` and key rows `k_origin..` of
/// its tensors, which hold only the tokens of its windows: the gathered tokens of the segment
/// that fall in them are `[q_lo, q_hi)` and `[k_lo, k_hi)`, and token `t` sits at tensor row
/// `seg_start + t · dilation − origin`. Without a window they are `[0, tokens)` with origin 0.
#[derive(CubeType)]
pub(crate) struct Tile {
    /// Query block inside its segment.
    pub qb: usize,
    /// Query head.
    pub head: usize,
    /// Key/value head it reads.
    pub kv_head: usize,
    /// Batch index.
    pub batch: usize,
    /// Gathered tokens of its segment.
    pub tokens: usize,
    /// Blocks of its segment; a cube whose `qb` is past them has nothing to do.
    pub seg_blocks: usize,
    /// Dilation rate of the branch.
    pub dilation: usize,
    /// Raw position of gathered token 0 of its segment.
    pub seg_start: usize,
    /// First CSR row of its segment shape (full or tail).
    pub csr_base: usize,
    /// Gathered query tokens of the segment inside the query window: `[q_lo, q_hi)`.
    pub q_lo: usize,
    /// End of the query window in gathered tokens.
    pub q_hi: usize,
    /// Gathered key tokens of the segment inside the key window: `[k_lo, k_hi)`.
    pub k_lo: usize,
    /// End of the key window in gathered tokens.
    pub k_hi: usize,
    /// Raw position of the first row of the query tensors.
    pub q_origin: usize,
    /// Raw position of the first row of the key/value tensors.
    pub k_origin: usize,
}

/// The number of gathered tokens `t < tokens` of a segment whose raw position
/// `start + t · dilation` lies before raw position `at`.
#[cube]
pub(crate) fn tokens_before(at: usize, start: usize, dilation: usize, tokens: usize) -> usize {
    // ceil((at - start) / dilation) for at > start, without overflow at `at = u32::MAX`.
    let before = select(at > start, (at - start - 1) / dilation + 1, 0usize);
    select(before < tokens, before, tokens)
}

/// Decodes `params = [segment_length, dilation, offset, num_segments, blocks_full, tokens_full,
/// tokens_tail, group, q_start, q_end, k_start, k_end]` for query-block row `row` (the last
/// four: the raw positions of the windows, see [`Tile`]).
#[cube]
#[allow(clippy::manual_div_ceil)] // CubeCL kernel code
pub(crate) fn locate(
    params: &Tensor<u32>,
    row: usize,
    #[comptime] block: usize,
    #[comptime] windowed: bool,
) -> Tile {
    let seg_len = params[0] as usize;
    let dilation = params[1] as usize;
    let offset = params[2] as usize;
    let num_segments = params[3] as usize;
    let blocks_full = params[4] as usize;
    let tokens_full = params[5] as usize;
    let tokens_tail = params[6] as usize;
    let group = params[7] as usize;
    let segment = row / blocks_full;
    let head = offset + dilation * CUBE_POS_Y as usize;
    let is_tail = segment + 1 == num_segments && tokens_tail > 0;
    let tokens = select(is_tail, tokens_tail, tokens_full);
    let seg_start = segment * seg_len + offset;
    // Without a window (known when the kernel is compiled) the bounds are the segment's.
    let mut q_origin = 0usize;
    let mut k_origin = 0usize;
    let mut q_lo = 0usize;
    let mut q_hi = tokens;
    let mut k_lo = 0usize;
    let mut k_hi = tokens;
    if comptime!(windowed) {
        q_origin = params[8] as usize;
        k_origin = params[10] as usize;
        q_lo = tokens_before(q_origin, seg_start, dilation, tokens);
        q_hi = tokens_before(params[9] as usize, seg_start, dilation, tokens);
        k_lo = tokens_before(k_origin, seg_start, dilation, tokens);
        k_hi = tokens_before(params[11] as usize, seg_start, dilation, tokens);
    }
    Tile {
        qb: row % blocks_full,
        head,
        kv_head: head / group,
        batch: CUBE_POS_Z as usize,
        tokens,
        seg_blocks: (tokens + block - 1) / block,
        dilation,
        seg_start,
        csr_base: select(is_tail, blocks_full + 1, 0usize),
        q_lo,
        q_hi,
        k_lo,
        k_hi,
        q_origin,
        k_origin,
    }
}

/// The gathered tokens `[lo, hi)` of a tile's segment that a tensor holds, from raw position
/// `origin` on: the tile's query window or its key window.
#[derive(CubeType)]
pub(crate) struct Rows {
    /// First gathered token inside.
    pub lo: usize,
    /// End of the gathered tokens inside.
    pub hi: usize,
    /// Raw position of the tensor's first row.
    pub origin: usize,
}

#[cube]
impl Rows {
    /// The query rows of `tile`.
    pub(crate) fn queries(tile: &Tile) -> Rows {
        Rows {
            lo: tile.q_lo,
            hi: tile.q_hi,
            origin: tile.q_origin,
        }
    }

    /// The key rows of `tile`.
    pub(crate) fn keys(tile: &Tile) -> Rows {
        Rows {
            lo: tile.k_lo,
            hi: tile.k_hi,
            origin: tile.k_origin,
        }
    }

    /// Whether gathered token `t` is inside.
    pub(crate) fn holds(&self, t: usize) -> bool {
        t >= self.lo && t < self.hi
    }

    /// The tensor row of gathered token `t`, or of the first token inside where `t` is not.
    pub(crate) fn row(&self, tile: &Tile, t: usize) -> usize {
        tile.seg_start + select(self.holds(t), t, self.lo) * tile.dilation - self.origin
    }

    /// The first block of `block` tokens that meets the rows.
    pub(crate) fn first_block(&self, #[comptime] block: usize) -> usize {
        self.lo / block
    }

    /// The end of the blocks that meet the rows (equal to [`first_block`](Self::first_block)
    /// when there are none, so that a loop between the two runs no block).
    #[allow(clippy::manual_div_ceil)] // CubeCL kernel code
    pub(crate) fn end_block(&self, #[comptime] block: usize) -> usize {
        select(
            self.lo < self.hi,
            (self.hi + block - 1) / block,
            self.lo / block,
        )
    }

    /// Whether block `b` of `block` tokens holds some of the rows.
    pub(crate) fn meet(&self, b: usize, #[comptime] block: usize) -> bool {
        self.lo < self.hi && b * block < self.hi && b * block + block > self.lo
    }
}

/// `max(a, b)`.
#[cube]
pub(crate) fn clamp_up(a: usize, b: usize) -> usize {
    select(a > b, a, b)
}

/// `min(a, b)`.
#[cube]
pub(crate) fn clamp_down(a: usize, b: usize) -> usize {
    select(a < b, a, b)
}

/// Stages the `CHUNK` gathered keys and values of key block `kb` from offset `c0` (strided rows
/// of the tile's segment) in shared memory as f32, and whether each is a present token in
/// `kvalid`. Run by all `block` units of the cube.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_keys<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    mask: &Tensor<u32>,
    ks: &mut [f32],
    vs: &mut [f32],
    kvalid: &mut [u32],
    tile: &Tile,
    kb: usize,
    c0: usize,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] masked: bool,
) {
    let k_base = tile.batch * k.stride(0) + tile.kv_head * k.stride(1);
    let v_base = tile.batch * v.stride(0) + tile.kv_head * v.stride(1);
    let mut e = UNIT_POS as usize;
    while e < CHUNK * head_dim {
        let c = e / head_dim;
        let d = e % head_dim;
        let tk = kb * block + c0 + c;
        let keys = Rows::keys(tile);
        let present = keys.holds(tk) && c0 + c < block;
        // Rows outside the key window read its first key, a row the tensors hold.
        let pk = keys.row(tile, tk);
        ks[e] = f32::cast_from(k[k_base + pk * k.stride(2) + d * k.stride(3)]);
        vs[e] = f32::cast_from(v[v_base + pk * v.stride(2) + d * v.stride(3)]);
        if d == 0 {
            let mut ok = present;
            if comptime!(masked) {
                ok = ok && mask[tile.batch * mask.stride(0) + pk * mask.stride(1)] != 0;
            }
            kvalid[c] = select(ok, 1u32, 0u32);
        }
        e += block;
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)] // CubeCL kernel code
fn block_sparse_forward<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    mask: &Tensor<u32>,
    row_ptr: &Tensor<u32>,
    runs: &Tensor<u32>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    params: &Tensor<u32>,
    scale: f32,
    neg_inf: f32,
    #[comptime] head_dim: usize,
    #[comptime] block: usize,
    #[comptime] causal: bool,
    #[comptime] masked: bool,
    #[comptime] unroll: bool,
    #[comptime] windowed: bool,
) {
    let tile = locate(params, CUBE_POS_X as usize, block, windowed);
    let (queries, keys) = (Rows::queries(&tile), Rows::keys(&tile));
    if tile.qb >= tile.seg_blocks || !queries.meet(tile.qb, block) {
        terminate!();
    }
    let (qb, head, batch, csr_base) = (tile.qb, tile.head, tile.batch, tile.csr_base);

    let unit = UNIT_POS as usize;
    let tq = qb * block + unit;
    let q_valid = queries.holds(tq);
    let pq = queries.row(&tile, tq);
    // Key blocks that meet the key window.
    let kb_first = keys.first_block(block);
    let kb_end = keys.end_block(block);

    // The query row, pre-scaled, and the accumulator, in registers.
    let mut qr = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    let q_base = batch * q.stride(0) + head * q.stride(1) + pq * q.stride(2);
    #[unroll]
    for d in 0..head_dim {
        qr[d] = f32::cast_from(q[q_base + d * q.stride(3)]) * scale;
        acc[d] = 0.0f32;
    }
    let mut m = neg_inf;
    let mut l = 0.0f32;
    let mut s = Array::<f32>::new(CHUNK);

    let mut ks = Shared::<[f32]>::new_slice(CHUNK * head_dim);
    let mut vs = Shared::<[f32]>::new_slice(CHUNK * head_dim);
    let mut kvalid = Shared::<[u32]>::new_slice(CHUNK);

    let run_lo = row_ptr[csr_base + qb] as usize;
    let run_hi = row_ptr[csr_base + qb + 1] as usize;
    for run in run_lo..run_hi {
        let kb_lo = clamp_up(runs[2 * run] as usize, kb_first);
        let kb_hi = clamp_down(runs[2 * run + 1] as usize, kb_end);
        for kb in kb_lo..kb_hi {
            let mut c0 = 0usize;
            while c0 < block {
                stage_keys(
                    k,
                    v,
                    mask,
                    &mut ks[0..CHUNK * head_dim],
                    &mut vs[0..CHUNK * head_dim],
                    &mut kvalid[0..CHUNK],
                    &tile,
                    kb,
                    c0,
                    head_dim,
                    block,
                    masked,
                );
                sync_cube();

                let mut chunk_max = neg_inf;
                for c in 0..CHUNK {
                    let tk = kb * block + c0 + c;
                    let mut ok = kvalid[c] != 0;
                    if comptime!(causal) {
                        ok = ok && tk <= tq;
                    }
                    let mut dot = 0.0f32;
                    #[unroll(unroll)]
                    for d in 0..head_dim {
                        dot += qr[d] * ks[c * head_dim + d];
                    }
                    s[c] = select(ok, dot, neg_inf);
                    chunk_max = f32::max(chunk_max, s[c]);
                }
                let m_new = f32::max(m, chunk_max);
                if m_new != neg_inf {
                    let alpha = f32::exp(m - m_new);
                    l *= alpha;
                    #[unroll(unroll)]
                    for d in 0..head_dim {
                        acc[d] *= alpha;
                    }
                    for c in 0..CHUNK {
                        let p = f32::exp(s[c] - m_new);
                        l += p;
                        #[unroll(unroll)]
                        for d in 0..head_dim {
                            acc[d] += p * vs[c * head_dim + d];
                        }
                    }
                    m = m_new;
                }
                sync_cube();
                c0 += CHUNK;
            }
        }
    }

    if q_valid {
        let empty = l == 0.0f32;
        let inv = select(empty, 0.0f32, 1.0f32 / select(empty, 1.0f32, l));
        let o_base = batch * out.stride(0) + head * out.stride(1) + pq * out.stride(2);
        let o_step = out.stride(3);
        #[unroll]
        for d in 0..head_dim {
            out[o_base + d * o_step] = F::cast_from(acc[d] * inv);
        }
        let l_index = batch * lse.stride(0) + head * lse.stride(1) + pq * lse.stride(2);
        lse[l_index] = select(empty, neg_inf, m + f32::ln(select(empty, 1.0f32, l)));
    }
}

/// A device tensor: handle, shape and strides in elements.
#[derive(Debug, Clone)]
pub struct TensorRef {
    /// The buffer.
    pub handle: Handle,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides in elements.
    pub strides: Vec<usize>,
}

impl TensorRef {
    /// A contiguous tensor of `shape` in `handle`.
    pub fn contiguous(handle: Handle, shape: Vec<usize>) -> Self {
        let mut strides = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * shape[d + 1];
        }
        Self {
            handle,
            shape,
            strides,
        }
    }

    pub(crate) fn arg(&self) -> TensorArg {
        // SAFETY: the caller of the launch API vouches that the handle holds the shape.
        unsafe {
            TensorArg::from_raw_parts(
                self.handle.clone(),
                self.strides.clone().into(),
                self.shape.clone().into(),
            )
        }
    }
}

/// The layout of one head class on the device, in the kernel's compact form.
///
/// Rows `0..blocks_full` of `row_ptr` describe a full segment, rows
/// `blocks_full + 1 .. blocks_full + 1 + blocks_tail` the tail segment; row `q` holds the runs
/// `runs[2·i] .. runs[2·i + 1]` (key blocks `[start, end)`) for `i` in `row_ptr[q]..row_ptr[q+1]`.
#[derive(Debug, Clone)]
pub struct ClassArgs {
    /// `[blocks_full + 1 + blocks_tail + 1]` u32.
    pub row_ptr: TensorRef,
    /// `[2 · runs]` u32 (at least 2 entries).
    pub runs: TensorRef,
    /// `[12]` u32: segment length, dilation, offset, segments, blocks of a full segment, tokens
    /// of a full segment, tokens of the tail segment (0 if none), query heads per kv head, then
    /// the [`Window`] (`[0, u32::MAX, 0, u32::MAX]` for none).
    pub params: TensorRef,
    /// Number of query-block rows to launch (`segments · blocks_full`).
    pub rows: usize,
    /// Number of heads in the class.
    pub heads: usize,
    /// Whether `params` holds a window other than the whole sequence: the portable and the
    /// manual-MMA kernels take windows, the `cmma` kernels do not (a windowed launch that
    /// would run them runs the portable ones).
    pub windowed: bool,
}

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
    /// The last four entries of [`ClassArgs::params`]: this window, or none.
    pub fn params(window: Option<Window>) -> [u32; 4] {
        match window {
            Some(w) => [w.q_start, w.q_end, w.k_start, w.k_end].map(|p| p as u32),
            None => [0, u32::MAX, 0, u32::MAX],
        }
    }
}

/// Element type of the attention tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnDtype {
    /// f32
    F32,
    /// f16
    F16,
    /// bf16
    BF16,
}

impl AttnDtype {
    /// The CubeCL element type.
    pub(crate) fn elem(self) -> cubecl::ir::ElemType {
        use cubecl::ir::{ElemType, FloatKind};
        ElemType::Float(match self {
            Self::F32 => FloatKind::F32,
            Self::F16 => FloatKind::F16,
            Self::BF16 => FloatKind::BF16,
        })
    }
}

/// The tensor-core shape `m×n×16` for `dtype` operands into f32 accumulators, where the tensor
/// cores take that dtype (f16, bf16) and planes are 32 wide; `None` otherwise.
fn half_mma(client: &Client, dtype: AttnDtype, n: u32) -> Option<cubecl::features::MmaConfig> {
    let hw = &client.properties().hardware;
    let planes_32 = hw.plane_size_min == 32 && hw.plane_size_max == 32;
    (dtype != AttnDtype::F32 && planes_32).then(|| cubecl::features::MmaConfig {
        a_type: dtype.elem(),
        b_type: dtype.elem(),
        cd_type: AttnDtype::F32.elem(),
        m: 16,
        n,
        k: 16,
    })
}

/// Whether the tensor-core kernel ([`crate::forward_tc`]) serves `config` on `client`: f16/bf16
/// with a 16×16×16 `cmma` into f32, 32-wide planes, head dim 32 or 64, block 64 or 128.
pub fn tensor_cores_apply(client: &Client, config: &ForwardConfig) -> bool {
    half_mma(client, config.dtype, 16).is_some_and(|mma| {
        matches!(config.head_dim, 32 | 64)
            && matches!(config.block, 64 | 128)
            && client.features().matmul.cmma.contains(&mma)
    })
}

/// Whether the manual-MMA kernel ([`crate::forward_mma`]) serves `config` on `client`: f16/bf16
/// with the runtime's manual `mma` at 16×8×16 into f32 and `ldmatrix` (CUDA sm_80+), 32-wide
/// planes, head dim 32, 64 or 128, block 64, 128 or 256. The launch also needs 8-wide row loads
/// (see [`vector_width`]). The backward's manual-MMA kernels follow the same rule.
pub fn manual_mma_applies(client: &Client, config: &ForwardConfig) -> bool {
    let features = client.features();
    half_mma(client, config.dtype, 8).is_some_and(|mma| {
        matches!(config.head_dim, 32 | 64 | 128)
            && matches!(config.block, 64 | 128 | 256)
            && features.matmul.mma.contains(&mma)
            && features.matmul.ldmatrix.contains(&config.dtype.elem())
    })
}

/// The pass whose kernels [`manual_mma_serves`] chooses.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pass {
    Forward,
    Backward,
}

/// Whether a launch of `pass` runs the manual-MMA kernels: [`manual_mma_applies`], rows read
/// as 8-wide vectors (`width`, from [`vector_width`]), and not turned off by the environment.
/// `DILATED_ATTENTION_FORWARD=cmma` or `DILATED_ATTENTION_BACKWARD=cmma` runs the `cmma`
/// kernels of that pass instead, for comparisons; the variables are read once per process.
pub(crate) fn manual_mma_serves(
    client: &Client,
    config: &ForwardConfig,
    width: usize,
    pass: Pass,
) -> bool {
    use std::sync::OnceLock;
    static OFF: [OnceLock<bool>; 2] = [OnceLock::new(), OnceLock::new()];
    let (slot, var) = match pass {
        Pass::Forward => (&OFF[0], "DILATED_ATTENTION_FORWARD"),
        Pass::Backward => (&OFF[1], "DILATED_ATTENTION_BACKWARD"),
    };
    let off = *slot.get_or_init(|| std::env::var(var).is_ok_and(|v| v == "cmma"));
    !off && width == 8 && manual_mma_applies(client, config)
}

/// 16-row MMA tiles per plane of the manual-MMA forward and `dQ` kernels (with 2, each
/// shared-memory `B` fragment feeds two MMAs): 2 for both, or what
/// `DILATED_ATTENTION_FORWARD_TILES=1|2` and `DILATED_ATTENTION_DQ_TILES=1|2` say, for
/// comparisons; read once per process.
pub(crate) fn mma_tiles(pass: Pass) -> usize {
    use std::sync::OnceLock;
    static TILES: [OnceLock<usize>; 2] = [OnceLock::new(), OnceLock::new()];
    let (slot, var, default) = match pass {
        Pass::Forward => (&TILES[0], "DILATED_ATTENTION_FORWARD_TILES", 2),
        Pass::Backward => (&TILES[1], "DILATED_ATTENTION_DQ_TILES", 2),
    };
    *slot.get_or_init(|| match std::env::var(var).as_deref() {
        Ok("1") => 1,
        Ok("2") => 2,
        _ => default,
    })
}

/// Whether the portable kernels unroll their loops over the head dim.
///
/// Unrolled, the query row and the accumulators stay in registers (on CUDA the rolled loops
/// index them dynamically, which puts them in local memory). Not on Mesa's lavapipe (plane
/// width 8): its LLVM compiles the unrolled kernels very slowly, and it stops every loop
/// after 65 535 iterations per invocation, counted over all loops, so kernels there are
/// exact only while `n · head_dim` per row stays well under that (the CI sizes do).
pub(crate) fn unroll_inner_loops(client: &Client) -> bool {
    client.properties().hardware.plane_size_max > 8
}

/// Static configuration of a forward launch.
#[derive(Debug, Clone, Copy)]
pub struct ForwardConfig {
    /// Element type of `q, k, v, out`.
    pub dtype: AttnDtype,
    /// Head dimension (one of [`SUPPORTED_HEAD_DIMS`]).
    pub head_dim: usize,
    /// Block size in gathered tokens (a power of two up to [`MAX_BLOCK`]).
    pub block: usize,
    /// Causal masking.
    pub causal: bool,
    /// Softmax scale.
    pub scale: f32,
}

impl ForwardConfig {
    /// Checks what the kernel supports and that the runtime of `client` has the element type
    /// (WGSL, for one, has no bf16).
    pub fn check_on(&self, client: &Client) -> Result<(), KernelError> {
        self.check()?;
        if client.features().supports_type(self.dtype.elem()) {
            Ok(())
        } else {
            Err(KernelError::Unsupported {
                field: "dtype",
                rule: format!("this runtime has no {:?} kernels", self.dtype),
            })
        }
    }

    /// Checks what the kernel supports.
    pub fn check(&self) -> Result<(), KernelError> {
        if !SUPPORTED_HEAD_DIMS.contains(&self.head_dim) {
            return Err(KernelError::Unsupported {
                field: "head_dim",
                rule: format!("the forward kernel supports {SUPPORTED_HEAD_DIMS:?}"),
            });
        }
        if !self.block.is_power_of_two() || self.block > MAX_BLOCK {
            return Err(KernelError::Unsupported {
                field: "block_size",
                rule: format!("the forward kernel supports powers of two up to {MAX_BLOCK}"),
            });
        }
        Ok(())
    }
}

/// The padding mask, or a 1×1 stand-in over `any` that no kernel reads (`masked` is false):
/// the kernels take a mask tensor either way.
pub(crate) fn mask_or_stand_in(mask: Option<&TensorRef>, any: &TensorRef) -> TensorRef {
    mask.cloned()
        .unwrap_or_else(|| TensorRef::contiguous(any.handle.clone(), vec![1, 1]))
}

/// Vector width of the tensor-core kernels' row loads: 8 (16-byte loads) where every tensor
/// has a contiguous head dim and 8-aligned row starts, else 1.
pub(crate) fn vector_width(tensors: &[&TensorRef]) -> usize {
    let aligned = tensors
        .iter()
        .all(|t| t.strides[3] == 1 && t.strides[..3].iter().all(|s| s % 8 == 0));
    if aligned { 8 } else { 1 }
}

/// Whether [`forward_class`] can merge a class's result into `out, lse` in the kernel for
/// these tensors (`q, k, v` as they will be passed): the manual-MMA kernel does.
pub fn fuses_merge(
    client: &Client,
    config: &ForwardConfig,
    q: &TensorRef,
    k: &TensorRef,
    v: &TensorRef,
) -> bool {
    manual_mma_runs(client, config, &[q, k, v], Pass::Forward)
}

/// Whether a launch of `pass` on these row tensors (`q, k, v`, and `dout` for the backward)
/// runs the manual-MMA kernels: a supported configuration, [`manual_mma_serves`] at their
/// [`vector_width`].
pub(crate) fn manual_mma_runs(
    client: &Client,
    config: &ForwardConfig,
    tensors: &[&TensorRef],
    pass: Pass,
) -> bool {
    config.check_on(client).is_ok()
        && manual_mma_serves(client, config, vector_width(tensors), pass)
}

/// Launches the forward of one head class.
///
/// - `q, out: [batch, heads, n, head_dim]`, `k, v: [batch, kv_heads, n, head_dim]`
/// - `mask: [batch, n]` u32 (1 = key present), or `None`
/// - `lse: [batch, heads, n]` f32
///
/// With a windowed `class` (see [`Window`]) `q, out, lse` hold the window's query rows and
/// `k, v, mask` its key rows.
///
/// Writes the class's rows of `out` and `lse` only: overwrites them, or with `merge` merges
/// the class's result into what they hold (LSE merge; `0, -inf` rows take the result as it is),
/// which only the kernels of [`fuses_merge`] do.
#[allow(clippy::too_many_arguments)]
pub fn forward_class(
    client: &Client,
    config: &ForwardConfig,
    q: &TensorRef,
    k: &TensorRef,
    v: &TensorRef,
    mask: Option<&TensorRef>,
    out: &TensorRef,
    lse: &TensorRef,
    class: &ClassArgs,
    merge: bool,
) -> Result<(), KernelError> {
    config.check_on(client)?;
    let batch = q.shape[0];
    if class.rows == 0 || class.heads == 0 || batch == 0 {
        return Ok(());
    }
    let max_cubes = 65_535;
    if class.rows > max_cubes || class.heads > max_cubes || batch > max_cubes {
        return Err(KernelError::Unsupported {
            field: "n",
            rule: format!("at most {max_cubes} query blocks per class, heads and batch"),
        });
    }
    let mask_ref = &mask_or_stand_in(mask, lse);
    let width = vector_width(&[q, k, v]);
    let manual = manual_mma_serves(client, config, width, Pass::Forward);
    if merge && class.windowed {
        return Err(KernelError::Unsupported {
            field: "merge",
            rule: "a windowed launch writes a partial result; merge it with `merge_lse`".into(),
        });
    }
    if merge && !manual {
        return Err(KernelError::Unsupported {
            field: "merge",
            rule: "only the manual-MMA forward merges in the kernel (see `fuses_merge`)".into(),
        });
    }
    // The tensor-core kernel reads rows as vectors: it needs a contiguous head dim.
    let tensor_cores = !manual
        && !class.windowed
        && tensor_cores_apply(client, config)
        && [q, k, v].iter().all(|t| t.strides[3] == 1);
    // Query rows per cube: the manual-MMA tile, the cmma kernel's 64, or a whole block (one
    // unit per row); cubes have two units per row on the tensor cores.
    let tiles = mma_tiles(Pass::Forward);
    let (rows_per_cube, threads) = if manual {
        crate::forward_mma::cube_shape(config.block, tiles)
    } else if tensor_cores {
        (64, 128)
    } else {
        (config.block, config.block)
    };
    let x = class.rows * (config.block / rows_per_cube);
    if x > max_cubes {
        return Err(KernelError::Unsupported {
            field: "n",
            rule: format!("at most {max_cubes} query tiles per class"),
        });
    }
    let count = CubeCount::Static(x as u32, class.heads as u32, batch as u32);
    let dim = CubeDim::new_1d(threads as u32);
    macro_rules! launch {
        ($kernel:ident, $t:ty $(, $vec:expr)? ; $($extra:expr),*) => {
            // SAFETY: every index the kernels form stays inside its tensor: token positions are
            // clamped to real tokens of the segment, CSR indices come from the layout, and
            // shared-memory indices are bounded by the comptime tile sizes.
            unsafe {
                $kernel::launch_unchecked::<$t>(
                    client,
                    count,
                    dim,
                    $($vec,)?
                    q.arg(),
                    k.arg(),
                    v.arg(),
                    mask_ref.arg(),
                    class.row_ptr.arg(),
                    class.runs.arg(),
                    out.arg(),
                    lse.arg(),
                    class.params.arg(),
                    config.scale,
                    f32::NEG_INFINITY,
                    config.head_dim,
                    config.block,
                    config.causal,
                    mask.is_some(),
                    $($extra,)*
                )
            }
        };
    }
    use crate::forward_mma::block_sparse_forward_mma;
    use crate::forward_tc::block_sparse_forward_tc;
    let unroll = unroll_inner_loops(client);
    let windowed = class.windowed;
    let blocks = crate::mma::min_blocks(
        client,
        crate::mma::Occupancy::Forward,
        crate::forward_mma::shared_bytes(config.head_dim, config.block, tiles, width),
    );
    match (config.dtype, manual, tensor_cores) {
        (AttnDtype::F32, _, _) => launch!(block_sparse_forward, f32; unroll, windowed),
        (AttnDtype::F16, true, _) => {
            launch!(block_sparse_forward_mma, half::f16, width; tiles, merge, blocks, windowed)
        }
        (AttnDtype::BF16, true, _) => {
            launch!(block_sparse_forward_mma, half::bf16, width; tiles, merge, blocks, windowed)
        }
        (AttnDtype::F16, false, true) => launch!(block_sparse_forward_tc, half::f16, width;),
        (AttnDtype::BF16, false, true) => launch!(block_sparse_forward_tc, half::bf16, width;),
        (AttnDtype::F16, false, false) => {
            launch!(block_sparse_forward, half::f16; unroll, windowed)
        }
        (AttnDtype::BF16, false, false) => {
            launch!(block_sparse_forward, half::bf16; unroll, windowed)
        }
    }
    Ok(())
}

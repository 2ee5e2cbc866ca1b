//! Writes the CUDA C++ of the Hopper kernels (forward, `dQ`, `dK/dV`) as the default plan
//! would compile them on an sm_90 device, without a GPU: one `.cu` file a kernel, with the
//! launch bounds NVRTC would see. Compile them with NVRTC and `ptxas -arch=sm_90a -v` to read
//! registers and spills (`docs/bench/s22/model/comp.sh`, `patches/README.md`).
//!
//! `cargo run --example kernel_source --features cuda -- --out /tmp/cu --head-dim 128`

use std::path::PathBuf;

use clap::Parser;
use dilated_attention_examples::cli::DtypeArg;
use dilated_attention_kernels::hopper::source::{SourceCase, hopper_sources};
use dilated_attention_kernels::{AttnDtype, Sm80Tuning};

/// The kernels' shape.
#[derive(Debug, Parser)]
#[command(about = "Writes the Hopper kernels' CUDA C++ without a GPU")]
struct Args {
    /// Folder for the `.cu` files (created if missing).
    #[arg(long, default_value = "kernel-source")]
    out: PathBuf,
    /// Element type: f16 or bf16.
    #[arg(long, value_enum, default_value = "f16")]
    dtype: DtypeArg,
    /// Head dim: 64 or 128.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Tokens a block: 128 or 256.
    #[arg(long, default_value_t = 128)]
    block: usize,
    /// Causal masking.
    #[arg(long)]
    causal: bool,
    /// Gradients stored in the input dtype instead of added to f32.
    #[arg(long)]
    store: bool,
    /// The forward's experimental switches (`Sm80Tuning`): `overlap` (products in flight
    /// across the softmax), `wide` (128 keys a step), `paired-pv`, `lazy` (lazy rescaling),
    /// `grid` (one cube a query tile instead of the persistent grid), `copies` (every chunk by
    /// the producer's row copies, not whole chunks by TMA), `queries` (query tiles by TMA too), `handoff` (with `queries`: tiles and chunk positions
    /// handed by the producer), `moved` (a producer warpgroup that moves its registers to the
    /// consumers), `turns` (with `overlap`: the consumer warpgroups take turns at the tensor
    /// cores); and the backward's `fused-dq` (`dQ` inside `dK/dV`) and `handed-dq` (`dQ` on a
    /// persistent grid with its tiles handed: adds the `dq_handed_*` source), `handed-dkdv`
    /// (likewise `dK/dV`: adds `dkdv_handed_*`).
    #[arg(long, value_delimiter = ',')]
    switches: Vec<Switch>,
    /// Resident cubes an SM the forward's launch bounds ask for (0: as many as its shared
    /// memory allows, at most 2; only off the persistent grid).
    #[arg(long, default_value_t = 0)]
    forward_min_blocks: u8,
}

/// An experimental switch of `Sm80Tuning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Switch {
    Overlap,
    Wide,
    PairedPv,
    Lazy,
    Grid,
    Copies,
    Queries,
    Handoff,
    FusedDq,
    Moved,
    Turns,
    HandedDq,
    HandedDkdv,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let on = |s: Switch| args.switches.contains(&s);
    let tuning = Sm80Tuning {
        overlap_softmax: on(Switch::Overlap),
        wide_chunks: on(Switch::Wide),
        paired_pv: on(Switch::PairedPv),
        lazy_rescale: on(Switch::Lazy),
        tma_loads: !on(Switch::Copies),
        tma_queries: on(Switch::Queries) || on(Switch::Handoff),
        handed_tiles: on(Switch::Handoff),
        fused_dq: on(Switch::FusedDq),
        register_move: on(Switch::Moved),
        warpgroup_turns: on(Switch::Turns),
        handed_dq: on(Switch::HandedDq),
        handed_dkdv: on(Switch::HandedDkdv),
        persistent_forward: if on(Switch::Grid) { 0 } else { u32::MAX },
        forward_min_blocks: args.forward_min_blocks,
        ..Sm80Tuning::default()
    };
    let case = SourceCase {
        dtype: match args.dtype {
            DtypeArg::F32 => AttnDtype::F32,
            DtypeArg::F16 => AttnDtype::F16,
            DtypeArg::Bf16 => AttnDtype::BF16,
        },
        head_dim: args.head_dim,
        block: args.block,
        causal: args.causal,
        store: args.store,
        tuning,
    };
    std::fs::create_dir_all(&args.out)?;
    for kernel in hopper_sources(case)? {
        let path = args.out.join(format!("{}.cu", kernel.name));
        std::fs::write(&path, &kernel.source)?;
        println!(
            "{} ({} units, entry {})",
            path.display(),
            kernel.threads,
            kernel.entry
        );
    }
    Ok(())
}

//! The downstream check with Burn's default features: `Cube` must be `Fusion<CubeBackend>`.
//!
//! `cargo run -p downstream-defaults [-- wgpu|cuda]` (wgpu by default; CUDA with
//! `--features cuda`).

fn main() -> std::process::ExitCode {
    downstream_check::main(true)
}

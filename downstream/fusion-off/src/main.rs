//! The downstream check with Burn's default features off: `Cube` must be `CubeBackend`.
//!
//! `cargo run -p downstream-fusion-off [-- wgpu|cuda]` (wgpu by default; CUDA with
//! `--features cuda`).

fn main() -> std::process::ExitCode {
    downstream_check::main(false)
}

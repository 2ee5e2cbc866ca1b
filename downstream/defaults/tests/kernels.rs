//! The downstream check as this project's own test (how CI runs it): Burn with its default
//! features (Fusion on), the kernels against the reference path on every device the build
//! has — wgpu always (lavapipe in CI), CUDA with the `cuda` feature.

use rstest::rstest;

#[rstest]
#[case::wgpu("wgpu")]
#[cfg_attr(feature = "cuda", case::cuda("cuda"))]
fn kernels_agree_with_the_reference(#[case] device: &str) {
    if let Err(e) = downstream_check::check(true, device) {
        panic!("downstream check on {device}: {e}");
    }
}

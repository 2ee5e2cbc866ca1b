//! `wgmma`: the Hopper warpgroup products on one tile against f64 host products (f16, bf16).
//! Bar: 1e-2 of the largest reference value (the f32 accumulation of rounded inputs lands
//! near 1e-6; a wrong descriptor or fragment layout lands near 1). Elsewhere the check says
//! the device has no `wgmma` and passes.

use dilated_attention_kernels::AttnDtype;
use dilated_attention_kernels::hopper::selftest::wgmma_selftest;

use super::support::Probe;

pub fn run(p: &mut Probe, cube: &cubecl::Device) {
    let client = cube.client();
    for dtype in [AttnDtype::F16, AttnDtype::BF16] {
        match wgmma_selftest(&client, dtype) {
            Ok(check) => {
                println!(
                    "wgmma {dtype:?}: s = a·bᵀ (smem × smem) rel err {:.2e}; o = p·v (registers × smem, trans-b, accumulated) rel err {:.2e}; s by two narrow (n32) products rel err {:.2e}",
                    check.scores, check.output, check.narrow
                );
                for (what, err) in [
                    ("scores", check.scores),
                    ("output", check.output),
                    ("narrow scores", check.narrow),
                ] {
                    if err.is_nan() || err > 1e-2 {
                        p.over
                            .push(format!("wgmma {dtype:?} {what}: rel err {err:.2e} > 1e-2"));
                    }
                }
            }
            Err(e) => println!("wgmma {dtype:?}: not run ({e})"),
        }
    }
}

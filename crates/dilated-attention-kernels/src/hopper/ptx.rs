//! The PTX text of the warpgroup products in `super::wgmma`: one `gpu_asm!` block per call, its
//! operands numbered as CubeCL lowers them (`$n` a CubeCL operand, `%n` a PTX register).

use super::wgmma::{PANEL_ROW, Product};

/// Bytes from a K-major operand's start to k-step `step`: 32 bytes (16 columns) a step within
/// a panel row, then the next panel.
fn k_step(step: u32, panel: u32) -> u32 {
    (step / 4) * panel + (step % 4) * 32
}

/// Where the `A` operand of a product lives.
#[derive(Clone, Copy)]
pub(super) enum Operand {
    Shared,
    Registers,
}

/// Where one product of a call finds its operands and puts its result, as PTX register numbers
/// (`%n`) and CubeCL operand indices (`$n`, the descriptors).
#[derive(Clone, Copy)]
struct Slot {
    /// The product's shape and operand layout.
    product: Product,
    /// First of the 32 result registers.
    out: usize,
    /// First of the 32 accumulator input registers, when adding.
    acc: Option<usize>,
    /// The `A` descriptor's operand index, or the first of its 16 fragment registers.
    a: (Operand, usize),
    /// The `B` descriptor's operand index.
    b: usize,
    /// The product's N: 64, or 32 for a narrow one (`n / 2` result registers).
    n: usize,
}

/// The PTX of one call. Operands are numbered as CubeCL lowers them: the result first (PTX
/// registers `%0..%32`), then the inputs in order (the 32 accumulator inputs when adding, the 16
/// fragment registers of a register `A`, the descriptors); `first` is the operand index of the
/// `A` descriptor, or the one before the `B` descriptor for a register `A`.
pub(super) fn product_ptx(p: Product, a: Operand, accumulate: bool, first: usize) -> String {
    let acc_regs = 32;
    let a_reg = acc_regs + if accumulate { acc_regs } else { 0 };
    let slot = Slot {
        product: p,
        out: 0,
        acc: accumulate.then_some(acc_regs),
        a: match a {
            Operand::Shared => (a, first),
            Operand::Registers => (a, a_reg),
        },
        b: first + 1,
        n: 64,
    };
    products_ptx(&[slot])
}

/// The PTX of a pair of products issued together (one fence, one commit, one wait), results in
/// `%0..%32` and `%32..%64`. Shared `A`: operands `$1..$5` are `A₀, B₀, A₁, B₁`. Register `A`
/// (always adding): the 64 accumulator inputs (`%64..%128`), the 32 fragment registers
/// (`%128..%160`), then `B₀ = $97`, `B₁ = $98`.
pub(super) fn pair_ptx(p: Product, a: Operand) -> String {
    let slots = match a {
        Operand::Shared => [0, 1].map(|k| Slot {
            product: p,
            out: 32 * k,
            acc: None,
            a: (a, 1 + 2 * k),
            b: 2 + 2 * k,
            n: 64,
        }),
        Operand::Registers => [0, 1].map(|k| Slot {
            product: p,
            out: 32 * k,
            acc: Some(64 + 32 * k),
            a: (a, 128 + 16 * k),
            b: 97 + k,
            n: 64,
        }),
    };
    products_ptx(&slots)
}

/// The PTX of a pair of narrow products (`N = 32`), all four operands in shared memory, issued
/// together: results in `%0..%16` and `%16..%32`, operands `$1..$5` as for [`pair_ptx`]'s shared
/// `A`.
pub(super) fn narrow_pair_ptx(p: Product) -> String {
    let slots = [0, 1].map(|k| Slot {
        product: p,
        out: 16 * k,
        acc: None,
        a: (Operand::Shared, 1 + 2 * k),
        b: 2 + 2 * k,
        n: 32,
    });
    products_ptx(&slots)
}

/// The PTX of `O += P₀·V₀ + P₁·V₁` over two chunks as one group (`panels` 64-column panels of
/// `O`: 1 at head dim 64, 2 at 128), register `A`: the results in `%0..%(32 · panels)`, the
/// accumulator inputs next, then the 32 fragment registers (`P₀`'s 16, `P₁`'s 16), then the `B`
/// descriptors — chunk 0's panels, then chunk 1's. Each panel's second product adds onto the
/// first's result registers inside the group, so no instruction outside `wgmma` touches them
/// between the two (which a chain of two in-flight calls could not promise).
pub(super) fn chained_ptx(p: Product, panels: usize) -> String {
    let out = 32 * panels;
    // Registers: results, accumulator inputs, fragments; operands (`$n`): the result, then
    // each input, the descriptors after the accumulators and fragments.
    let frags = 2 * out;
    let b = out + 32 + 1;
    let slots = (0..2)
        .flat_map(|chunk| {
            (0..panels).map(move |panel| Slot {
                product: p,
                out: 32 * panel,
                acc: Some(out + 32 * panel),
                a: (Operand::Registers, frags + 16 * chunk),
                b: b + panels * chunk + panel,
                n: 64,
            })
        })
        .collect::<Vec<_>>();
    products_ptx(&slots)
}

/// The PTX of one call issuing the products of `slots` after one fence, then one commit and,
/// unless the products are `in_flight`, one wait; a lone product names its result as the whole
/// vector operand (`$0`). Slots that add onto the same result registers copy the accumulator
/// in once.
fn products_ptx(slots: &[Slot]) -> String {
    let ty = if slots[0].product.bf16 { "bf16" } else { "f16" };
    let mut s =
        String::from("{\n.reg .pred p;\n.reg .b64 da, db;\n.reg .b32 one;\nmov.b32 one, 1;\n");
    let mut copied = Vec::new();
    for slot in slots {
        if let Some(acc) = slot.acc {
            if copied.contains(&slot.out) {
                continue;
            }
            copied.push(slot.out);
            for i in 0..slot.n / 2 {
                s += &format!("mov.b32 %{}, %{};\n", slot.out + i, acc + i);
            }
        }
    }
    s += "wgmma.fence.sync.aligned;\n";
    for slot in slots {
        let (p, n) = (slot.product, slot.n);
        let d = (slot.out..slot.out + n / 2)
            .map(|r| format!("%{r}"))
            .collect::<Vec<_>>();
        let d = if slots.len() == 1 {
            // A lone product names its result as the whole vector operand.
            "$0".to_string()
        } else {
            format!("{{{}}}", d.join(", "))
        };
        for step in 0..p.steps {
            // `p` (scale-d) false overwrites the accumulator: the first step without an input.
            let overwrite = u32::from(slot.acc.is_none() && step == 0);
            s += &format!("setp.ne.b32 p, one, {overwrite};\n");
            let a_arg = match slot.a {
                (Operand::Shared, op) => {
                    s += &format!("add.s64 da, ${op}, {};\n", k_step(step, p.a_panel) >> 4);
                    "da".to_string()
                }
                (Operand::Registers, first) => {
                    let r = first + 4 * step as usize;
                    format!("{{%{}, %{}, %{}, %{}}}", r, r + 1, r + 2, r + 3)
                }
            };
            let b_offset = if p.b_transposed {
                step * 16 * PANEL_ROW as u32
            } else {
                k_step(step, p.b_panel)
            };
            s += &format!("add.s64 db, ${}, {};\n", slot.b, b_offset >> 4);
            let tb = u32::from(p.b_transposed);
            s += &match slot.a.0 {
                Operand::Shared => format!(
                    "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {d}, {a_arg}, db, p, 1, 1, 0, {tb};\n"
                ),
                Operand::Registers => format!(
                    "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{ty}.{ty} {d}, {a_arg}, db, p, 1, 1, {tb};\n"
                ),
            };
        }
    }
    s += "wgmma.commit_group.sync.aligned;\n";
    if !slots[0].product.in_flight {
        s += "wgmma.wait_group.sync.aligned 0;\n";
    }
    s += "}";
    s
}

/// The PTX of a settle call: wait until at most `pending` committed groups are still in flight,
/// then copy the `n` result registers of an in-flight call (inputs `%n..%2n`) into the call's
/// result (`%0..%n`). The copies come after the wait, so no instruction touches the registers
/// `wgmma` writes while it runs (ptxas would serialise every product of the kernel, its
/// warning C7513, if one did).
pub(super) fn settle_ptx(pending: u32, n: usize) -> String {
    let mut s = format!("wgmma.wait_group.sync.aligned {pending};\n");
    for i in 0..n {
        s += &format!("mov.b32 %{i}, %{};\n", n + i);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_text_adds_the_second_chunk_onto_the_first() {
        let p = Product {
            bf16: false,
            steps: 4,
            a_panel: 0,
            b_panel: 0,
            b_transposed: true,
            in_flight: true,
        };
        for panels in [1, 2] {
            let text = chained_ptx(p, panels);
            // Every product accumulates (no first step that overwrites), one commit, no wait.
            assert!(!text.contains("setp.ne.b32 p, one, 1;"), "{text}");
            assert_eq!(text.matches("wgmma.mma_async").count(), 8 * panels);
            assert_eq!(text.matches("commit_group").count(), 1);
            assert!(!text.contains("wait_group"));
            // The accumulator is copied in once, and every descriptor is used.
            assert_eq!(text.matches("mov.b32 %").count(), 32 * panels);
            let first_b = 32 * panels + 32 + 1;
            for k in 0..2 * panels {
                assert!(text.contains(&format!("${}, ", first_b + k)), "{text}");
            }
            // The second chunk's fragments are the last 16 registers.
            let last = 64 * panels + 31;
            assert!(text.contains(&format!("%{last}}}")), "{text}");
        }
    }

    #[test]
    fn product_text_names_every_operand_once_per_step() {
        let p = Product {
            bf16: false,
            steps: 4,
            a_panel: 8192,
            b_panel: 0,
            b_transposed: true,
            in_flight: false,
        };
        let t = product_ptx(p, Operand::Registers, true, 48);
        assert_eq!(t.matches("wgmma.mma_async").count(), 4);
        assert_eq!(t.matches("mov.b32 %").count(), 32);
        // The last step's fragment registers follow the 32 outputs and 32 inputs.
        assert!(t.contains("{%76, %77, %78, %79}"), "{t}");
        // MN-major `B`: a k-step is 16 rows of 128 bytes.
        assert!(t.contains("add.s64 db, $49, 384;"), "{t}");
        let z = product_ptx(p, Operand::Shared, false, 1);
        assert!(
            z.contains("setp.ne.b32 p, one, 1;"),
            "the first step overwrites"
        );
        // K-major `A`: 32 bytes a k-step.
        assert!(z.contains("add.s64 da, $1, 6;"), "{z}");
    }

    #[test]
    fn k_major_steps_cross_into_the_next_panel() {
        let p = Product {
            bf16: false,
            steps: 8,
            a_panel: 16384,
            b_panel: 8192,
            b_transposed: false,
            in_flight: false,
        };
        let z = product_ptx(p, Operand::Shared, false, 1);
        assert_eq!(z.matches("wgmma.mma_async").count(), 8);
        // Step 5: the second panel, one step (32 bytes) in.
        assert!(z.contains("add.s64 da, $1, 1026;"), "{z}");
        assert!(z.contains("add.s64 db, $2, 514;"), "{z}");
    }

    #[test]
    fn paired_products_write_their_own_halves_and_wait_once() {
        let p = Product {
            bf16: true,
            steps: 4,
            a_panel: 0,
            b_panel: 0,
            b_transposed: true,
            in_flight: false,
        };
        let t = pair_ptx(p, Operand::Registers);
        assert_eq!(t.matches("wgmma.mma_async").count(), 8);
        assert_eq!(t.matches("wait_group").count(), 1);
        assert_eq!(t.matches("wgmma.fence").count(), 1);
        // The second accumulator comes in after the first, and lands in the second half.
        assert!(t.contains("mov.b32 %32, %96;"), "{t}");
        assert!(t.contains("mov.b32 %63, %127;"), "{t}");
        // The last step of the second product: fragments 144.., its B descriptor $98.
        assert!(t.contains("{%156, %157, %158, %159}"), "{t}");
        assert!(t.contains("add.s64 db, $98, 384;"), "{t}");
        assert!(t.contains("{%32, %33,"), "{t}");
        let z = pair_ptx(p, Operand::Shared);
        assert!(z.contains("add.s64 da, $3, 0;"), "{z}");
        assert!(z.contains("add.s64 db, $4, 384;"), "{z}");
        assert_eq!(z.matches("setp.ne.b32 p, one, 1;").count(), 2);
    }

    #[test]
    fn narrow_pairs_write_sixteen_registers_each() {
        let p = Product {
            bf16: false,
            steps: 8,
            a_panel: 16384,
            b_panel: 8192,
            b_transposed: false,
            in_flight: false,
        };
        let t = narrow_pair_ptx(p);
        assert_eq!(
            t.matches("wgmma.mma_async.sync.aligned.m64n32k16").count(),
            16
        );
        assert_eq!(t.matches("wait_group").count(), 1);
        assert!(t.contains("{%0, %1,"), "{t}");
        assert!(t.contains("%14, %15}"), "{t}");
        assert!(t.contains("{%16, %17,"), "{t}");
        assert!(t.contains("%30, %31}"), "{t}");
        assert!(!t.contains("%32"), "{t}");
        // The second product's descriptors, last step: the second panels, three steps in.
        assert!(t.contains("add.s64 da, $3, 1030;"), "{t}");
        assert!(t.contains("add.s64 db, $4, 518;"), "{t}");
    }

    #[test]
    fn in_flight_products_commit_without_waiting_and_settle_waits_before_copying() {
        let p = Product {
            bf16: false,
            steps: 4,
            a_panel: 8192,
            b_panel: 8192,
            b_transposed: false,
            in_flight: true,
        };
        let t = product_ptx(p, Operand::Shared, false, 1);
        assert!(t.contains("wgmma.commit_group"), "{t}");
        assert!(!t.contains("wait_group"), "{t}");
        let s = settle_ptx(1, 32);
        // The wait comes first: no copy may read a register the products still write.
        assert!(s.starts_with("wgmma.wait_group.sync.aligned 1;"), "{s}");
        assert_eq!(s.matches("mov.b32").count(), 32);
        assert!(s.contains("mov.b32 %31, %63;"), "{s}");
    }
}

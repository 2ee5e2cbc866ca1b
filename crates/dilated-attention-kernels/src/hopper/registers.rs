//! How a moved cube's registers are shared (`Variant::moved`, the head-dim-128 `dK/dV`): a
//! 384-unit cube, two consumer warpgroups and a producer warpgroup, launched at one cube an SM;
//! the producer warpgroup's planes give registers back (`setmaxnreg.dec`) and the consumers
//! take them (`setmaxnreg.inc`).

use cubecl::prelude::*;

use super::ring::{CONSUMERS, PRODUCERS};

/// How a 384-unit cube (two consumer warpgroups and a producer warpgroup) shares its registers
/// once the producer warpgroup has given some back: launched at 168 registers a unit (ptxas's
/// share of the SM's 64K for one cube), `128 · producer + 256 · consumer` must not pass
/// `384 · 168 = 64 512`, or the consumers' `setmaxnreg.inc` waits forever.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RegisterSplit {
    /// Registers a producer unit keeps (`setmaxnreg.dec`).
    pub producer: u32,
    /// Registers a consumer unit may use (`setmaxnreg.inc`).
    pub consumer: u32,
}

impl RegisterSplit {
    /// 40 / 232: the producer's copies keep their addresses in registers (no spill).
    pub(crate) const BALANCED: Self = Self {
        producer: 40,
        consumer: 232,
    };
    /// 24 / 240 (FlashAttention-3's split): eight more a consumer unit, for a step that holds
    /// `S`, `O` and the held `P` at once at head dim 128; the producer then keeps a few of its
    /// per-tile addresses in local memory (one load a copy, one warp).
    /// 56 / 224: for a producer that walks many tiles (the handed `dK/dV`,
    /// `super::backward_dkdv_handed`), whose per-tile state spilled at 40 (ptxas sm_90a, head
    /// dim 128: 104 bytes, 14 local loads in its row copies; at 56, 48 bytes and none there);
    /// the consumers' chunk step needs no more than 224.
    pub(crate) const WIDE_PRODUCER: Self = Self {
        producer: 56,
        consumer: 224,
    };
    pub(crate) const LEAN_PRODUCER: Self = Self {
        producer: 24,
        consumer: 240,
    };
}

/// A kernel of 384 units, producer side: all four planes of the producer warpgroup give
/// registers back to the SM's pool (`setmaxnreg.dec`, to `split.producer`), then all but its
/// first plane, the producer warp, leave.
#[cube]
pub(crate) fn producer_registers(#[comptime] split: RegisterSplit) {
    let text = comptime!(format!(
        "setmaxnreg.dec.sync.aligned.u32 {};",
        split.producer
    ));
    gpu_asm!("{text}");
    if UNIT_POS as usize >= comptime!(CONSUMERS + PRODUCERS) {
        terminate!();
    }
}

/// A kernel of 384 units: each consumer warpgroup takes registers from the pool
/// (`setmaxnreg.inc`, to `split.consumer`; it waits until the producers have given theirs
/// back).
#[cube]
pub(crate) fn consumer_registers(#[comptime] split: RegisterSplit) {
    let text = comptime!(format!(
        "setmaxnreg.inc.sync.aligned.u32 {};",
        split.consumer
    ));
    gpu_asm!("{text}");
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::*;

    #[rstest]
    #[case::balanced(RegisterSplit::BALANCED)]
    #[case::lean_producer(RegisterSplit::LEAN_PRODUCER)]
    #[case::wide_producer(RegisterSplit::WIDE_PRODUCER)]
    fn register_shares_fit_the_launch_s_registers(#[case] split: RegisterSplit) {
        // `setmaxnreg` takes multiples of 8 in 24..=256; the shares of the three warpgroups
        // must fit what the launch gave them (168 a unit).
        for r in [split.producer, split.consumer] {
            assert!(r % 8 == 0 && (24..=256).contains(&r), "{r}");
        }
        let shares = 128 * split.producer + CONSUMERS as u32 * split.consumer;
        assert!(shares <= 384 * 168, "{shares}");
    }
}

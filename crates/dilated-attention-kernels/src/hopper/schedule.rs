//! Which query tiles a Hopper forward cube serves: one (a cube per tile, the grid of every
//! other family) or, on a persistent grid, every `CUBE_COUNT_X`-th of them.
//!
//! A launch's tiles are `cubes_per_head · heads · batch` (cube rows of a class head, then its
//! heads, then the batch); tile `t` is cube row `t % cubes_per_head` of class head
//! `(t / cubes_per_head) % heads` and batch `t / (cubes_per_head · heads)`. Adjacent tiles are
//! adjacent query blocks of one head, so the cubes resident at one time read neighbouring keys
//! (L2). On a persistent grid, cube `x` serves tiles `x, x + G, x + 2G, …` (`G = CUBE_COUNT_X`,
//! the SMs times the cubes one SM holds) and its producer warp runs on into the next tile's
//! keys while the consumers write the last tile's rows: the pipeline fills once per cube, not
//! once per tile.

use cubecl::prelude::*;

use super::query_tile::ROWS;
use crate::addressing::{Rows, Tile, locate_at};

/// The persistent grid's tile count and shape (unused on a grid of one cube per tile).
#[derive(CubeLaunch, CubeType)]
pub(crate) struct Schedule {
    /// Tiles of the launch: `cubes_per_head · heads · batch`.
    pub tiles: u32,
    /// Cube rows of one class head (`class rows · block / 128`).
    pub cubes_per_head: u32,
    /// Heads of the class.
    pub heads: u32,
}

/// The cube's first tile and the step to its next (past `end`: none), as `(first, step, end)`.
#[cube]
pub(crate) fn span(schedule: &Schedule, #[comptime] persistent: bool) -> (usize, usize, usize) {
    let first = CUBE_POS_X as usize;
    let mut step = 1usize;
    let mut end = first + 1;
    if comptime!(persistent) {
        step = CUBE_COUNT_X as usize;
        end = schedule.tiles as usize;
    }
    (first, step, end)
}

/// Tile `t`'s layout row and query-block part: its [`Tile`] and `sub`, the 128-row part of the
/// block (`subtiles` parts a block).
#[cube]
pub(crate) fn tile_at(
    params: &Tensor<u32>,
    schedule: &Schedule,
    t: usize,
    #[comptime] subtiles: usize,
    #[comptime] block: usize,
    #[comptime] windowed: bool,
    #[comptime] persistent: bool,
) -> (Tile, usize) {
    let mut x = t;
    let mut head = CUBE_POS_Y as usize;
    let mut batch = CUBE_POS_Z as usize;
    if comptime!(persistent) {
        let per_head = schedule.cubes_per_head as usize;
        let heads = schedule.heads as usize;
        x = t % per_head;
        head = (t / per_head) % heads;
        batch = t / (per_head * heads);
    }
    let tile = locate_at(params, x / subtiles, head, batch, block, windowed);
    (tile, x % subtiles)
}

/// A persistent launch: `cubes` cubes, `per_sm` of them resident on one SM (the launch asks
/// registers for that many), serving `tiles` tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Persistent {
    /// Cubes of the grid (one dimension).
    pub cubes: u32,
    /// Cubes an SM holds at once.
    pub per_sm: u32,
    /// Tiles of the launch.
    pub tiles: u32,
}

/// The persistent grid for a launch of `cubes_per_head · heads · batch` tiles of
/// `shared_bytes` each, at most `cap` cubes (`Sm80Tuning::persistent_forward`) and
/// [`resident_cubes`](fn@resident_cubes) an SM; `None` for a grid of one cube a tile: `cap` 0,
/// a device that does not report its SM count, or a tile count past `u32`.
pub(crate) fn persistent_schedule(
    client: &Client,
    cap: u32,
    shared_bytes: usize,
    per_sm_cap: u32,
    [cubes_per_head, heads, batch]: [usize; 3],
) -> Option<Persistent> {
    let hardware = &client.properties().hardware;
    plan_persistent(
        cap,
        hardware.num_streaming_multiprocessors?,
        hardware.max_shared_memory_size,
        shared_bytes,
        per_sm_cap,
        cubes_per_head.checked_mul(heads)?.checked_mul(batch)?,
    )
}

/// [`persistent_schedule`](fn@persistent_schedule) on plain numbers: `sms` SMs whose cubes may
/// each take `max_shared` bytes (the SM holds that plus the 1 KB CUDA reserves a cube).
fn plan_persistent(
    cap: u32,
    sms: u32,
    max_shared: usize,
    shared_bytes: usize,
    per_sm_cap: u32,
    tiles: usize,
) -> Option<Persistent> {
    if cap == 0 {
        return None;
    }
    let tiles = u32::try_from(tiles).ok()?;
    let per_sm = resident_cubes(max_shared, shared_bytes, per_sm_cap);
    let cubes = sms.saturating_mul(per_sm).min(cap).min(tiles);
    (cubes > 0).then_some(Persistent {
        cubes,
        per_sm,
        tiles,
    })
}

/// Cubes of `shared_bytes` one SM holds at once (1 or 2, and at most `per_sm_cap`, a kernel
/// that needs more registers than two cubes leave), where each may take `max_shared` bytes and
/// CUDA reserves 1 KB a cube: two at head dim 64, one at 128. Either grid asks registers for
/// this many: without the ask ptxas may spend enough registers on the head-dim-64 forward that
/// an SM holds only one cube.
pub(crate) fn resident_cubes(max_shared: usize, shared_bytes: usize, per_sm_cap: u32) -> u32 {
    let by_shared = ((max_shared + 1024) / (shared_bytes + 1024)).clamp(1, 2) as u32;
    by_shared.min(per_sm_cap.max(1))
}

/// Whether a tile has rows to serve: its block lies in its segment and its `ROWS` rows from
/// `r0` meet the window `rows` (the queries of a forward or `dQ` tile, the keys of a `dK/dV`
/// one).
#[cube]
pub(crate) fn serves(tile: &Tile, rows: &Rows, r0: usize) -> bool {
    tile.qb < tile.seg_blocks && r0 < rows.hi && r0 + ROWS > rows.lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hopper::forward::shared_bytes;

    const H100_SMS: u32 = 132;
    const HOPPER_SHARED: usize = 227 * 1024;

    #[rstest::rstest]
    fn either_grid_asks_registers_for_two_cubes_at_head_dim_64_and_one_at_128(
        #[values(false, true)] tma_queries: bool,
    ) {
        // The second query buffer (`Sm80Tuning::tma_queries`) keeps two cubes at head dim 64.
        assert_eq!(
            resident_cubes(HOPPER_SHARED, shared_bytes(64, tma_queries), 2),
            2
        );
        assert_eq!(
            resident_cubes(HOPPER_SHARED, shared_bytes(128, tma_queries), 2),
            1
        );
        // And the head-dim-128 cube still fits the SM with it.
        assert!(shared_bytes(128, tma_queries) <= HOPPER_SHARED);
        // A device whose shared memory holds less than one cube still gets an ask of one.
        assert_eq!(resident_cubes(48 * 1024, shared_bytes(64, true), 2), 1);
        // So does a kernel capped at one cube an SM.
        assert_eq!(resident_cubes(HOPPER_SHARED, shared_bytes(64, true), 1), 1);
    }

    #[test]
    fn head_dim_64_holds_two_cubes_an_sm_and_128_one() {
        let p64 = plan_persistent(
            u32::MAX,
            H100_SMS,
            HOPPER_SHARED,
            shared_bytes(64, true),
            2,
            8192,
        );
        assert_eq!(p64.map(|p| (p.cubes, p.per_sm)), Some((264, 2)));
        let p128 = plan_persistent(
            u32::MAX,
            H100_SMS,
            HOPPER_SHARED,
            shared_bytes(128, true),
            2,
            8192,
        );
        assert_eq!(p128.map(|p| (p.cubes, p.per_sm)), Some((132, 1)));
    }

    #[test]
    fn a_kernel_that_needs_an_sm_s_registers_gets_one_cube_an_sm() {
        let p64 = plan_persistent(
            u32::MAX,
            H100_SMS,
            HOPPER_SHARED,
            shared_bytes(64, true),
            1,
            8192,
        );
        assert_eq!(p64.map(|p| (p.cubes, p.per_sm)), Some((132, 1)));
    }

    #[test]
    fn the_grid_is_capped_by_the_tuning_and_the_tiles() {
        let plan = |cap, tiles| {
            plan_persistent(
                cap,
                H100_SMS,
                HOPPER_SHARED,
                shared_bytes(64, true),
                2,
                tiles,
            )
        };
        assert_eq!(plan(0, 8192), None);
        assert_eq!(plan(3, 8192).map(|p| p.cubes), Some(3));
        assert_eq!(plan(u32::MAX, 100).map(|p| p.cubes), Some(100));
        assert_eq!(plan(u32::MAX, 0), None);
        assert_eq!(plan(u32::MAX, 1 << 33), None);
    }
}

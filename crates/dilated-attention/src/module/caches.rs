//! The plan caches of a module, shared by its clones: layouts, the reference path's plans,
//! ring plans and (with kernels) device layouts, each bounded in bytes (`crate::cache`).

use std::sync::Arc;

use crate::cache::BoundedCache;
use crate::error::Result;
use crate::layout::BlockLayout;
use crate::pattern::DilatedPattern;
use crate::reference::ReferencePlan;
use crate::ring::RingPlan;
use crate::schedule::Partition;

/// What a reference plan covers: the whole sequence, or one ring step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ReferenceKey {
    /// `(n, heads)`.
    Whole(usize, usize),
    /// `(n, heads, holders, partition, holder, visiting chunk)`.
    Step(usize, usize, usize, Partition, usize, usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Caches {
    layouts: BoundedCache<(usize, usize), BlockLayout>,
    references: BoundedCache<ReferenceKey, ReferencePlan>,
    rings: BoundedCache<(usize, usize, usize, Partition), RingPlan>,
    #[cfg(feature = "cube")]
    pub device: crate::kernel::DeviceLayoutCache,
}

impl Caches {
    pub fn new(budget: usize) -> Self {
        let caches = Self {
            layouts: BoundedCache::new(budget),
            references: BoundedCache::new(budget),
            rings: BoundedCache::new(budget),
            #[cfg(feature = "cube")]
            device: crate::kernel::DeviceLayoutCache::default(),
        };
        #[cfg(feature = "cube")]
        caches.device.set_budget(budget);
        caches
    }

    /// The layout of `pattern` at `(n, heads)`.
    pub fn layout(
        &self,
        pattern: &DilatedPattern,
        n: usize,
        heads: usize,
    ) -> Result<Arc<BlockLayout>> {
        self.layouts
            .get_or_try_build(&(n, heads), || BlockLayout::new(pattern, n, heads))
    }

    /// The reference plan of the whole sequence of `layout`.
    pub fn reference(&self, layout: &Arc<BlockLayout>) -> Arc<ReferencePlan> {
        let key = ReferenceKey::Whole(layout.n, layout.heads);
        self.references
            .get_or_try_build::<core::convert::Infallible>(&key, || {
                Ok(ReferencePlan::new(layout.clone()))
            })
            .unwrap_or_else(|never| match never {})
    }

    /// The reference plan of holder `r`'s step against holder `s`'s chunk.
    pub fn step_reference(
        &self,
        layout: &Arc<BlockLayout>,
        ring: &RingPlan,
        (r, s): (usize, usize),
    ) -> Arc<ReferencePlan> {
        let key = ReferenceKey::Step(
            layout.n,
            layout.heads,
            ring.schedule.holders,
            ring.schedule.partition,
            r,
            s,
        );
        self.references
            .get_or_try_build::<core::convert::Infallible>(&key, || {
                Ok(ring.step_plan(layout.clone(), r, s))
            })
            .unwrap_or_else(|never| match never {})
    }

    /// The ring plan of `layout` over `holders` holders.
    pub fn ring(
        &self,
        layout: &BlockLayout,
        holders: usize,
        partition: Partition,
    ) -> Result<Arc<RingPlan>> {
        let key = (layout.n, layout.heads, holders, partition);
        self.rings
            .get_or_try_build(&key, || RingPlan::new(layout, holders, partition))
    }

    /// Layouts held.
    pub fn layouts(&self) -> usize {
        self.layouts.len()
    }

    /// Host bytes held by the layout, reference-plan and ring-plan caches.
    pub fn bytes(&self) -> usize {
        self.layouts.bytes() + self.references.bytes() + self.rings.bytes()
    }
}

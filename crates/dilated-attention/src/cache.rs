//! A bounded, shared cache of plans (layouts, ring plans, device layouts).
//!
//! Values are built outside the cache's lock, once per key: concurrent callers of one key wait
//! on that key's cell while other keys proceed. The cache keeps the entries it holds under a
//! budget in bytes (each value reports its own size) and evicts the least recently used first;
//! the entry just built is always kept, so a value larger than the budget still serves its
//! caller. [`clear_caches`] empties every cache of the process.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Default budget of one cache: 256 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// A value that reports the host (and device) bytes it holds.
pub(crate) trait CacheSize {
    /// Bytes held.
    fn cache_bytes(&self) -> usize;
}

type Cell<V> = Arc<Mutex<Option<Arc<V>>>>;

struct Entry<V> {
    cell: Cell<V>,
    bytes: usize,
    used: u64,
}

struct Inner<K, V> {
    entries: HashMap<K, Entry<V>>,
    bytes: usize,
    budget: usize,
    tick: u64,
}

/// A cache shared by clones (a module's clones share its cache).
pub(crate) struct BoundedCache<K, V> {
    inner: Arc<Mutex<Inner<K, V>>>,
}

impl<K, V> Clone for BoundedCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> core::fmt::Debug for BoundedCache<K, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("BoundedCache")
            .field("entries", &inner.entries.len())
            .field("bytes", &inner.bytes)
            .field("budget", &inner.budget)
            .finish()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static, V: CacheSize + Send + Sync + 'static> Default
    for BoundedCache<K, V>
{
    fn default() -> Self {
        Self::new(DEFAULT_CACHE_BYTES)
    }
}

impl<K: Hash + Eq + Clone + Send + 'static, V: CacheSize + Send + Sync + 'static>
    BoundedCache<K, V>
{
    /// An empty cache that holds at most `budget` bytes (0: nothing is kept).
    pub fn new(budget: usize) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            tick: 0,
        }));
        let weak: Weak<dyn Clearable> = Arc::downgrade(&inner) as Weak<dyn Clearable>;
        let mut caches = registry();
        caches.retain(|c| c.strong_count() > 0);
        caches.push(weak);
        Self { inner }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value of `key`, built by `build` if absent (outside the cache's lock; an error is
    /// returned and nothing is kept).
    pub fn get_or_try_build<E>(
        &self,
        key: &K,
        build: impl FnOnce() -> Result<V, E>,
    ) -> Result<Arc<V>, E> {
        let cell = {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            let entry = inner.entries.entry(key.clone()).or_insert_with(|| Entry {
                cell: Cell::default(),
                bytes: 0,
                used: tick,
            });
            entry.used = tick;
            entry.cell.clone()
        };
        let mut slot = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = slot.as_ref() {
            return Ok(value.clone());
        }
        let value = match build() {
            Ok(value) => Arc::new(value),
            Err(e) => {
                drop(slot);
                let mut inner = self.lock();
                if inner
                    .entries
                    .get(key)
                    .is_some_and(|entry| Arc::ptr_eq(&entry.cell, &cell) && entry.bytes == 0)
                {
                    inner.entries.remove(key);
                }
                return Err(e);
            }
        };
        *slot = Some(value.clone());
        drop(slot);
        let bytes = value.cache_bytes();
        let mut inner = self.lock();
        let inner = &mut *inner;
        match inner.entries.get_mut(key) {
            Some(entry) if Arc::ptr_eq(&entry.cell, &cell) => {
                inner.bytes = inner.bytes - entry.bytes + bytes;
                entry.bytes = bytes;
            }
            // Cleared while building: serve the value without keeping it.
            _ => return Ok(value),
        }
        while inner.bytes > inner.budget {
            let victim = inner
                .entries
                .iter()
                .filter(|(k, e)| *k != key && e.bytes > 0)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match victim.and_then(|k| inner.entries.remove(&k)) {
                Some(e) => inner.bytes -= e.bytes,
                None => break,
            }
        }
        if inner.budget == 0
            && let Some(e) = inner.entries.remove(key)
        {
            inner.bytes -= e.bytes;
        }
        Ok(value)
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.values().filter(|e| e.bytes > 0).count()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Sets the budget and evicts down to it.
    pub fn set_budget(&self, budget: usize) {
        let mut inner = self.lock();
        inner.budget = budget;
        while inner.bytes > inner.budget {
            let victim = inner
                .entries
                .iter()
                .filter(|(_, e)| e.bytes > 0)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            match victim.and_then(|k| inner.entries.remove(&k)) {
                Some(e) => inner.bytes -= e.bytes,
                None => break,
            }
        }
    }
}

/// A cache that [`clear_caches`] can empty.
trait Clearable: Send + Sync {
    fn clear(&self);
}

impl<K: Send, V: Send + Sync> Clearable for Mutex<Inner<K, V>> {
    fn clear(&self) {
        let mut inner = self.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.clear();
        inner.bytes = 0;
    }
}

fn registry() -> std::sync::MutexGuard<'static, Vec<Weak<dyn Clearable>>> {
    static CACHES: OnceLock<Mutex<Vec<Weak<dyn Clearable>>>> = OnceLock::new();
    CACHES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Empties every layout, ring and device-layout cache of the process (the modules keep
/// working and rebuild what they need).
pub fn clear_caches() {
    let caches: Vec<_> = registry().iter().filter_map(Weak::upgrade).collect();
    for cache in caches {
        cache.clear();
    }
}

impl<T: CacheSize> CacheSize for Vec<T> {
    fn cache_bytes(&self) -> usize {
        self.iter().map(CacheSize::cache_bytes).sum::<usize>() + size_of::<Self>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `clear_caches` empties every cache of the process: tests that count builds hold this.
    static GLOBAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        GLOBAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    struct Blob(usize);
    impl CacheSize for Blob {
        fn cache_bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn builds_once_and_evicts_least_recently_used() {
        let _serial = serial();
        let cache = BoundedCache::<u32, Blob>::new(100);
        let mut builds = 0;
        for key in [1, 2, 1, 3] {
            cache
                .get_or_try_build::<()>(&key, || {
                    builds += 1;
                    Ok(Blob(40))
                })
                .unwrap();
        }
        // 1 and 2 fit; 1 was used again, so 3 evicts 2.
        assert_eq!(builds, 3);
        assert_eq!((cache.len(), cache.bytes()), (2, 80));
        cache
            .get_or_try_build::<()>(&1, || panic!("1 is cached"))
            .unwrap();
        let rebuilt = std::cell::Cell::new(false);
        cache
            .get_or_try_build::<()>(&2, || {
                rebuilt.set(true);
                Ok(Blob(40))
            })
            .unwrap();
        assert!(rebuilt.get());
    }

    #[test]
    fn errors_are_not_kept_and_oversized_values_still_serve() {
        let _serial = serial();
        let cache = BoundedCache::<u32, Blob>::new(10);
        assert!(cache.get_or_try_build(&1, || Err("no")).is_err());
        assert_eq!(cache.len(), 0);
        let big = cache.get_or_try_build::<()>(&2, || Ok(Blob(50))).unwrap();
        assert_eq!(big.0, 50);
        assert_eq!(cache.len(), 1);
        cache.get_or_try_build::<()>(&3, || Ok(Blob(50))).unwrap();
        assert_eq!(cache.len(), 1, "the older oversized entry is evicted");
    }

    #[test]
    fn clear_caches_empties_every_cache() {
        let _serial = serial();
        let cache = BoundedCache::<u32, Blob>::new(1000);
        cache.get_or_try_build::<()>(&1, || Ok(Blob(8))).unwrap();
        clear_caches();
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn one_key_builds_once_across_threads() {
        let _serial = serial();
        let cache = BoundedCache::<u32, Blob>::new(1000);
        let builds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..4 {
                let (cache, builds) = (cache.clone(), builds.clone());
                s.spawn(move || {
                    cache
                        .get_or_try_build::<()>(&7, || {
                            builds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(Blob(8))
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(builds.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

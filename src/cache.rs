//! The small-file cache: bounded in bytes, with a time-to-live, single-flight loads and
//! short-lived negative entries for ids that have no file.
//!
//! Content under a file id never changes in Doris, because a changed file gets a new id.
//! So a cached file is never stale, and the time-to-live only returns memory of dropped files.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::metrics::Metrics;
use crate::store::SmallFile;

/// Bytes counted per cached entry on top of the file bytes and name: an estimate of the
/// entry's own bookkeeping (key, `Arc`s, moka's node), so that many tiny files are bounded too.
const ENTRY_OVERHEAD_BYTES: u64 = 256;

/// The source of a loaded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Store,
    Fe,
}

/// The result of one load of an id.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: Arc<SmallFile>,
    pub origin: Origin,
}

/// The reason a load gave no file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// Neither the store nor an FE has a file under the id.
    #[error("file not found")]
    NotFound,
    /// The store contains a bad object for the id (two objects, or one over the size limit).
    #[error("{0}")]
    Invalid(String),
    /// Store and FE failed or timed out.
    #[error("{0}")]
    Unavailable(String),
}

/// Loads the file of an id from wherever files live.
#[async_trait]
pub trait Loader: Send + Sync {
    async fn load(&self, id: i64) -> Result<Loaded, LoadError>;
}

/// The result of a cache lookup.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Found in the cache, or loaded by another request that this one waited for.
    Hit(Arc<SmallFile>),
    /// Loaded by this request.
    Miss(Loaded),
}

impl Lookup {
    pub fn file(&self) -> &Arc<SmallFile> {
        match self {
            Lookup::Hit(file) => file,
            Lookup::Miss(loaded) => &loaded.file,
        }
    }
}

/// Cache limits; see `CacheConfig` in the config for the defaults.
#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub max_bytes: u64,
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub negative_max_entries: u64,
}

/// The small-file cache in front of a [`Loader`].
pub struct FileCache {
    files: Cache<i64, Loaded>,
    missing: Cache<i64, ()>,
    loader: Arc<dyn Loader>,
    metrics: Arc<Metrics>,
}

impl FileCache {
    pub fn new(limits: CacheLimits, loader: Arc<dyn Loader>, metrics: Arc<Metrics>) -> FileCache {
        let eviction_metrics = Arc::clone(&metrics);
        let files = Cache::builder()
            .max_capacity(limits.max_bytes)
            .weigher(|_id: &i64, loaded: &Loaded| -> u32 {
                let bytes = entry_weight(&loaded.file);
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .time_to_live(limits.ttl)
            .eviction_listener(move |_id, loaded: Loaded, cause| {
                let weight = entry_weight(&loaded.file);
                eviction_metrics.cache_entries.dec();
                eviction_metrics
                    .cache_bytes
                    .sub(i64::try_from(weight).unwrap_or(i64::MAX));
                if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                    eviction_metrics.cache_evictions.inc();
                }
            })
            .build();
        let missing = Cache::builder()
            .max_capacity(limits.negative_max_entries)
            .time_to_live(limits.negative_ttl)
            .build();
        FileCache {
            files,
            missing,
            loader,
            metrics,
        }
    }

    /// Looks `id` up, loading it on a miss. Concurrent misses for one id share one load,
    /// and every one of them gets its result; a failed load is not cached.
    pub async fn get(&self, id: i64) -> Result<Lookup, LoadError> {
        if let Some(loaded) = self.files.get(&id).await {
            return Ok(Lookup::Hit(loaded.file));
        }
        if self.missing.contains_key(&id) {
            return Err(LoadError::NotFound);
        }
        let loader = Arc::clone(&self.loader);
        let entry = self
            .files
            .entry(id)
            .or_try_insert_with(async move { loader.load(id).await })
            .await;
        match entry {
            Ok(entry) if entry.is_fresh() => {
                let loaded = entry.into_value();
                let weight = entry_weight(&loaded.file);
                self.metrics.cache_entries.inc();
                self.metrics
                    .cache_bytes
                    .add(i64::try_from(weight).unwrap_or(i64::MAX));
                Ok(Lookup::Miss(loaded))
            }
            Ok(entry) => Ok(Lookup::Hit(entry.into_value().file)),
            Err(error) => {
                if matches!(*error, LoadError::NotFound) {
                    self.missing.insert(id, ()).await;
                }
                Err((*error).clone())
            }
        }
    }

    /// Bytes and entries counted by the cache, after it has applied pending evictions.
    pub async fn usage(&self) -> (u64, u64) {
        self.files.run_pending_tasks().await;
        (self.files.weighted_size(), self.files.entry_count())
    }

    /// Negative entries held, after pending evictions.
    pub async fn negative_entries(&self) -> u64 {
        self.missing.run_pending_tasks().await;
        self.missing.entry_count()
    }
}

fn entry_weight(file: &SmallFile) -> u64 {
    file.bytes.len() as u64 + file.name.len() as u64 + ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves ids 1..=1000 with `size` bytes each after a delay, and counts its loads.
    struct CountingLoader {
        loads: AtomicUsize,
        size: usize,
        delay: Duration,
        fail: bool,
    }

    #[async_trait]
    impl Loader for CountingLoader {
        async fn load(&self, id: i64) -> Result<Loaded, LoadError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            if self.fail {
                return Err(LoadError::Unavailable("store down".into()));
            }
            if !(1..=1000).contains(&id) {
                return Err(LoadError::NotFound);
            }
            Ok(Loaded {
                file: Arc::new(SmallFile::new(
                    format!("{id}.pem"),
                    Bytes::from(vec![b'x'; self.size]),
                )),
                origin: Origin::Store,
            })
        }
    }

    fn limits() -> CacheLimits {
        CacheLimits {
            max_bytes: 1 << 20,
            ttl: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(600),
            negative_max_entries: 100,
        }
    }

    fn cache(
        limits: CacheLimits,
        size: usize,
        delay_ms: u64,
        fail: bool,
    ) -> (FileCache, Arc<CountingLoader>) {
        let loader = Arc::new(CountingLoader {
            loads: AtomicUsize::new(0),
            size,
            delay: Duration::from_millis(delay_ms),
            fail,
        });
        let metrics = Arc::new(Metrics::unregistered().unwrap());
        let loader_dyn: Arc<dyn Loader> = Arc::clone(&loader) as Arc<dyn Loader>;
        (FileCache::new(limits, loader_dyn, metrics), loader)
    }

    #[tokio::test]
    async fn second_get_is_hit() {
        let (cache, loader) = cache(limits(), 10, 0, false);
        assert!(matches!(cache.get(1).await, Ok(Lookup::Miss(_))));
        assert!(matches!(cache.get(1).await, Ok(Lookup::Hit(_))));
        assert_eq!(loader.loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_misses_load_once() {
        let (cache, loader) = cache(limits(), 10, 50, false);
        let cache = Arc::new(cache);
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let cache = Arc::clone(&cache);
            tasks.push(tokio::spawn(async move { cache.get(7).await }));
        }
        let mut misses = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(Lookup::Miss(_)) => misses += 1,
                Ok(Lookup::Hit(_)) => {}
                Err(e) => panic!("lookup failed: {e}"),
            }
        }
        assert_eq!(loader.loads.load(Ordering::SeqCst), 1);
        assert_eq!(misses, 1);
    }

    #[tokio::test]
    async fn failed_load_reaches_every_waiter_and_is_not_cached() {
        let (cache, loader) = cache(limits(), 10, 50, true);
        let cache = Arc::new(cache);
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let cache = Arc::clone(&cache);
            tasks.push(tokio::spawn(async move { cache.get(7).await }));
        }
        for task in tasks {
            assert!(matches!(
                task.await.unwrap(),
                Err(LoadError::Unavailable(_))
            ));
        }
        assert_eq!(loader.loads.load(Ordering::SeqCst), 1);
        assert!(cache.get(7).await.is_err());
        assert_eq!(loader.loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn byte_bound_evicts() {
        let limits = CacheLimits {
            max_bytes: 10 * 1024,
            ..limits()
        };
        let (cache, _loader) = cache(limits, 1000, 0, false);
        for id in 1..=100 {
            cache.get(id).await.unwrap();
        }
        let (bytes, entries) = cache.usage().await;
        assert!(bytes <= 10 * 1024, "cache holds {bytes} bytes");
        assert!(entries < 100, "cache holds {entries} entries");
        assert!(entries > 0);
        assert!(cache.metrics.cache_evictions.get() > 0);
    }

    #[tokio::test]
    async fn ttl_expires() {
        let limits = CacheLimits {
            ttl: Duration::from_millis(100),
            ..limits()
        };
        let (cache, loader) = cache(limits, 10, 0, false);
        cache.get(1).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(matches!(cache.get(1).await, Ok(Lookup::Miss(_))));
        assert_eq!(loader.loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn negative_entry_skips_loader() {
        let (cache, loader) = cache(limits(), 10, 0, false);
        assert!(matches!(cache.get(5000).await, Err(LoadError::NotFound)));
        assert!(matches!(cache.get(5000).await, Err(LoadError::NotFound)));
        assert_eq!(loader.loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn negative_entries_expire() {
        let limits = CacheLimits {
            negative_ttl: Duration::from_millis(100),
            ..limits()
        };
        let (cache, loader) = cache(limits, 10, 0, false);
        assert!(cache.get(5000).await.is_err());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(cache.get(5000).await.is_err());
        assert_eq!(loader.loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn negative_entries_bounded() {
        let (cache, _loader) = cache(limits(), 10, 0, false);
        for id in 2000..12_000 {
            assert!(cache.get(id).await.is_err());
        }
        let held = cache.negative_entries().await;
        assert!(held <= 100, "negative cache holds {held} entries");
    }
}

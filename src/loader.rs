//! The load path of an uncached id: the store first, then an FE, then a write-back so that
//! other proxy replicas find the file in the store.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cache::{LoadError, Loaded, Loader, Origin};
use crate::fallback::FeFallback;
use crate::log_limit::LogLimiter;
use crate::metrics::Metrics;
use crate::store::{FileStore, StoreError};

/// How often each kind of store or FE failure is logged at most.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Loads from a [`FileStore`] with an optional [`FeFallback`].
pub struct StoreLoader {
    store: FileStore,
    fallback: Option<Arc<FeFallback>>,
    metrics: Arc<Metrics>,
    store_failures: Arc<LogLimiter>,
    fe_failures: LogLimiter,
}

impl StoreLoader {
    pub fn new(store: FileStore, fallback: Option<Arc<FeFallback>>, metrics: Arc<Metrics>) -> Self {
        StoreLoader {
            store,
            fallback,
            metrics,
            store_failures: Arc::new(LogLimiter::new(FAILURE_LOG_INTERVAL)),
            fe_failures: LogLimiter::new(FAILURE_LOG_INTERVAL),
        }
    }

    async fn load_from_fe(
        &self,
        id: i64,
        store_error: Option<StoreError>,
    ) -> Result<Loaded, LoadError> {
        let store_cause = store_error.as_ref().map(|e| e.to_string());
        let Some(fallback) = &self.fallback else {
            return match store_cause {
                Some(cause) => Err(LoadError::Unavailable(cause)),
                None => Err(LoadError::NotFound),
            };
        };

        match fallback.fetch(id).await {
            Ok(Some(file)) => {
                self.metrics
                    .fe_fallback_fetches
                    .with_label_values(&["ok"])
                    .inc();
                log::info!(
                    "file id {id} ({} bytes) fetched from an FE after a store miss",
                    file.bytes.len()
                );
                let file = Arc::new(file);
                self.write_back(id, Arc::clone(&file));
                Ok(Loaded {
                    file,
                    origin: Origin::Fe,
                })
            }
            Ok(None) => {
                self.metrics
                    .fe_fallback_fetches
                    .with_label_values(&["not_found"])
                    .inc();
                Err(LoadError::NotFound)
            }
            Err(e) => {
                self.metrics
                    .fe_fallback_fetches
                    .with_label_values(&["error"])
                    .inc();
                if let Some(held_back) = self.fe_failures.check() {
                    log::error!("{e} (similar FE fallback errors held back: {held_back})");
                }
                let cause = match store_cause {
                    Some(store) => format!("{store}; {e}"),
                    None => e.to_string(),
                };
                Err(LoadError::Unavailable(cause))
            }
        }
    }

    /// Writes a file fetched from an FE to the store in the background, create-if-absent.
    fn write_back(&self, id: i64, file: Arc<crate::store::SmallFile>) {
        let store = self.store.clone();
        let failures = Arc::clone(&self.store_failures);
        tokio::spawn(async move {
            match store.put_if_absent(id, &file).await {
                Ok(true) => log::info!("file id {id} written back to the store"),
                Ok(false) => log::debug!("file id {id} was already in the store"),
                Err(e) => {
                    if let Some(held_back) = failures.check() {
                        log::error!("{e} (similar store errors held back: {held_back})");
                    }
                }
            }
        });
    }
}

#[async_trait]
impl Loader for StoreLoader {
    async fn load(&self, id: i64) -> Result<Loaded, LoadError> {
        // FE ids are positive; the FE returns "not found" for every negative id.
        if id < 0 {
            return Err(LoadError::NotFound);
        }

        match self.store.load(id).await {
            Ok(Some(file)) => Ok(Loaded {
                file: Arc::new(file),
                origin: Origin::Store,
            }),
            Ok(None) => self.load_from_fe(id, None).await,
            Err(e @ (StoreError::Ambiguous { .. } | StoreError::TooLarge { .. })) => {
                // A bad object is an operator error that must be fixed in the store, so it is
                // logged every time and the id is easy to find.
                log::error!("refusing to serve: {e}");
                Err(LoadError::Invalid(e.to_string()))
            }
            Err(e) => {
                if let Some(held_back) = self.store_failures.check() {
                    log::error!("{e} (similar store errors held back: {held_back})");
                }
                self.load_from_fe(id, Some(e)).await
            }
        }
    }
}

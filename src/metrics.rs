//! Prometheus metrics, all named `doris_fe_proxy_*` and with low-cardinality labels only.
//!
//! The binary registers them in the default registry of the `prometheus` crate that
//! `pingora-prometheus` re-exports, which its HTTP service gathers from.

use std::time::Duration;

use pingora_prometheus::prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

pub use pingora_prometheus::prometheus;

/// Latency buckets in seconds, from 100 µs (a cache hit) to 10 s (a timed-out store call).
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Outcomes of a small-file request, the values of the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache (304 responses included).
    Hit,
    /// Loaded from the store, then served.
    MissStore,
    /// Fetched from an FE, then served.
    MissFe,
    NotFound,
    BadRequest,
    InvalidToken,
    /// Store and FE failed, or the store contains a bad object.
    Error,
}

impl Outcome {
    /// Every outcome, in the order of [`Outcome::index`].
    pub const ALL: [Outcome; 7] = [
        Outcome::Hit,
        Outcome::MissStore,
        Outcome::MissFe,
        Outcome::NotFound,
        Outcome::BadRequest,
        Outcome::InvalidToken,
        Outcome::Error,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::MissStore => "miss_store",
            Outcome::MissFe => "miss_fe",
            Outcome::NotFound => "not_found",
            Outcome::BadRequest => "bad_request",
            Outcome::InvalidToken => "invalid_token",
            Outcome::Error => "error",
        }
    }
}

/// Every metric of the proxy.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub small_file_requests: IntCounterVec,
    /// The children of `small_file_requests`, one per [`Outcome`], resolved once so that
    /// a request does not hash its label.
    small_file_by_outcome: Vec<IntCounter>,
    pub small_file_duration: Histogram,
    pub small_file_sent_bytes: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub cache_evictions: IntCounter,
    pub store_operations: IntCounterVec,
    pub store_duration: HistogramVec,
    pub fe_fallback_fetches: IntCounterVec,
    pub proxied_requests: IntCounterVec,
    pub proxied_duration: Histogram,
    pub healthy_backends: IntGauge,
    pub token_reloads: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> prometheus::Result<Metrics> {
        let metrics = Metrics::unregistered()?;
        registry.register(Box::new(metrics.small_file_requests.clone()))?;
        registry.register(Box::new(metrics.small_file_duration.clone()))?;
        registry.register(Box::new(metrics.small_file_sent_bytes.clone()))?;
        registry.register(Box::new(metrics.cache_entries.clone()))?;
        registry.register(Box::new(metrics.cache_bytes.clone()))?;
        registry.register(Box::new(metrics.cache_evictions.clone()))?;
        registry.register(Box::new(metrics.store_operations.clone()))?;
        registry.register(Box::new(metrics.store_duration.clone()))?;
        registry.register(Box::new(metrics.fe_fallback_fetches.clone()))?;
        registry.register(Box::new(metrics.proxied_requests.clone()))?;
        registry.register(Box::new(metrics.proxied_duration.clone()))?;
        registry.register(Box::new(metrics.healthy_backends.clone()))?;
        registry.register(Box::new(metrics.token_reloads.clone()))?;
        Ok(metrics)
    }

    /// Creates the metrics without registering them, for tests and embedded handlers.
    pub fn unregistered() -> prometheus::Result<Metrics> {
        let latency = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        let small_file_requests = IntCounterVec::new(
            Opts::new(
                "doris_fe_proxy_small_file_requests_total",
                "Small-file requests answered by the proxy, by outcome.",
            ),
            &["outcome"],
        )?;
        let small_file_by_outcome = Outcome::ALL
            .iter()
            .map(|outcome| small_file_requests.with_label_values(&[outcome.as_str()]))
            .collect();
        Ok(Metrics {
            small_file_requests,
            small_file_by_outcome,
            small_file_duration: Histogram::with_opts(latency(
                "doris_fe_proxy_small_file_request_duration_seconds",
                "Time from reading a small-file request to writing its response.",
            ))?,
            small_file_sent_bytes: IntCounter::new(
                "doris_fe_proxy_small_file_sent_bytes_total",
                "Small-file body bytes sent to clients.",
            )?,
            cache_entries: IntGauge::new(
                "doris_fe_proxy_cache_entries",
                "Files held in the small-file cache.",
            )?,
            cache_bytes: IntGauge::new(
                "doris_fe_proxy_cache_bytes",
                "File bytes held in the small-file cache.",
            )?,
            cache_evictions: IntCounter::new(
                "doris_fe_proxy_cache_evictions_total",
                "Files removed from the small-file cache for size or age.",
            )?,
            store_operations: IntCounterVec::new(
                Opts::new(
                    "doris_fe_proxy_store_operations_total",
                    "Calls to the file store, by operation and result.",
                ),
                &["op", "result"],
            )?,
            store_duration: HistogramVec::new(
                latency(
                    "doris_fe_proxy_store_operation_duration_seconds",
                    "Duration of calls to the file store, by operation.",
                ),
                &["op"],
            )?,
            fe_fallback_fetches: IntCounterVec::new(
                Opts::new(
                    "doris_fe_proxy_fe_fallback_fetches_total",
                    "Small files fetched from an FE after a store miss, by result.",
                ),
                &["result"],
            )?,
            proxied_requests: IntCounterVec::new(
                Opts::new(
                    "doris_fe_proxy_proxied_requests_total",
                    "Requests forwarded to an FE, by response status class (2xx, 3xx, 4xx, 5xx, error).",
                ),
                &["status_class"],
            )?,
            proxied_duration: Histogram::with_opts(latency(
                "doris_fe_proxy_proxied_request_duration_seconds",
                "Time from reading a forwarded request to the end of its response.",
            ))?,
            healthy_backends: IntGauge::new(
                "doris_fe_proxy_healthy_backends",
                "FE backends that pass the health check.",
            )?,
            token_reloads: IntCounterVec::new(
                Opts::new(
                    "doris_fe_proxy_token_reloads_total",
                    "Re-reads of a changed token file, by result.",
                ),
                &["result"],
            )?,
        })
    }

    pub fn observe_small_file(&self, outcome: Outcome, elapsed: Duration, body_bytes: usize) {
        self.small_file_by_outcome[outcome.index()].inc();
        self.small_file_duration.observe(elapsed.as_secs_f64());
        self.small_file_sent_bytes.inc_by(body_bytes as u64);
    }

    pub fn observe_store(&self, op: &str, result: &str, elapsed: Duration) {
        self.store_operations.with_label_values(&[op, result]).inc();
        self.store_duration
            .with_label_values(&[op])
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_proxied(&self, status: Option<u16>, elapsed: Duration) {
        let class = match status {
            Some(200..=299) => "2xx",
            Some(100..=199) => "1xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "error",
        };
        self.proxied_requests.with_label_values(&[class]).inc();
        self.proxied_duration.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_prometheus::prometheus::{Encoder, TextEncoder};

    #[test]
    fn registered_metrics_have_help_and_prefix() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        metrics.observe_small_file(Outcome::Hit, Duration::from_millis(1), 10);
        metrics.observe_store("get", "ok", Duration::from_millis(1));
        metrics.observe_proxied(Some(307), Duration::from_millis(1));
        metrics.fe_fallback_fetches.with_label_values(&["ok"]).inc();
        metrics.token_reloads.with_label_values(&["ok"]).inc();

        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        for family in registry.gather() {
            assert!(
                family.name().starts_with("doris_fe_proxy_"),
                "{}",
                family.name()
            );
            assert!(!family.help().is_empty(), "{}", family.name());
        }
        assert!(text.contains("doris_fe_proxy_small_file_requests_total{outcome=\"hit\"} 1"));
        assert!(text.contains("doris_fe_proxy_proxied_requests_total{status_class=\"3xx\"} 1"));
    }

    #[test]
    fn outcome_index_matches_all() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i, "{outcome:?}");
        }
    }

    #[test]
    fn second_registration_in_one_registry_fails() {
        let registry = Registry::new();
        Metrics::register(&registry).unwrap();
        assert!(Metrics::register(&registry).is_err());
    }
}

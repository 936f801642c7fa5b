//! Assembles the Pingora server from a [`Config`]: proxy listener, FE health checks, token
//! reloader and metrics listener.

use std::sync::Arc;
use std::time::Duration;

use pingora::server::Server;
use pingora::server::configuration::Opt;
use pingora::services::background::background_service;
use pingora_load_balancing::LoadBalancer;
use pingora_load_balancing::selection::RoundRobin;

use crate::access_log::AccessLog;
use crate::cache::{CacheLimits, FileCache};
use crate::config::{Config, ConfigError};
use crate::fallback::FeFallback;
use crate::fe_proxy::{FeProxy, UpstreamOptions};
use crate::health::FeHealthCheck;
use crate::loader::StoreLoader;
use crate::metrics::{Metrics, prometheus};
use crate::small_file::SmallFileHandler;
use crate::store::{FileStore, StoreUrl};
use crate::token::{ClusterToken, TokenError, TokenReloader};

/// A start-up error; each names the part that failed and why.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot load the cluster token: {0}")]
    Token(#[from] TokenError),
    #[error("fe.backends: cannot resolve the FE addresses: {0}")]
    Backends(std::io::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Process-level options from the command line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunOptions {
    /// Take the listeners over from a running instance (Pingora's zero-downtime upgrade).
    pub upgrade: bool,
    /// Detach into the background.
    pub daemon: bool,
}

/// Checks everything that start-up checks, without binding any port: the config, the
/// token source and the store.
pub fn check(config: &Config) -> Result<(), StartError> {
    ClusterToken::load(&config.small_file.token)?;
    open_store(config)?;
    resolve_backends(config)?;
    Ok(())
}

/// Builds a server that is ready for `run_forever`.
pub fn build(config: Config, options: RunOptions) -> Result<Server, StartError> {
    let metrics = Arc::new(Metrics::register(prometheus::default_registry())?);
    let token = Arc::new(ClusterToken::load(&config.small_file.token)?);
    let store = open_store(&config)?.with_metrics(Arc::clone(&metrics));

    let mut backends = resolve_backends(&config)?;
    let health_check = FeHealthCheck::new(&config.fe.health_check, Arc::clone(&metrics))?;
    backends.set_health_check(Box::new(health_check));
    backends.health_check_frequency =
        Some(Duration::from_millis(config.fe.health_check.interval_ms));
    backends.parallel_health_check = true;
    metrics
        .healthy_backends
        .set(i64::try_from(config.fe.backends.len()).unwrap_or(i64::MAX));
    let health_service = background_service("FE health check", backends);
    let backends = health_service.task();

    let small_file = &config.small_file;
    let fallback = if small_file.fallback_to_fe {
        Some(Arc::new(FeFallback::new(
            Arc::clone(&backends),
            Arc::clone(&token),
            Duration::from_millis(small_file.fe_timeout_ms),
            small_file.max_file_bytes,
        )?))
    } else {
        None
    };
    let loader = Arc::new(StoreLoader::new(store, fallback, Arc::clone(&metrics)));
    let limits = CacheLimits {
        max_bytes: small_file.cache.max_bytes,
        ttl: Duration::from_secs(small_file.cache.ttl_seconds),
        negative_ttl: Duration::from_secs(small_file.cache.negative_ttl_seconds),
        negative_max_entries: small_file.cache.negative_max_entries,
    };
    let cache = Arc::new(FileCache::new(limits, loader, Arc::clone(&metrics)));
    let handler = Arc::new(SmallFileHandler::new(
        Arc::clone(&token),
        cache,
        Arc::clone(&metrics),
        small_file.error_status,
    ));

    let upstream = UpstreamOptions {
        connect_timeout: Duration::from_millis(config.fe.connect_timeout_ms),
        read_timeout: Duration::from_millis(config.fe.read_timeout_ms),
        write_timeout: Duration::from_millis(config.fe.write_timeout_ms),
        idle_timeout: Duration::from_millis(config.fe.idle_timeout_ms),
        retries: config.fe.retries,
        downstream_keepalive_seconds: config.fe.downstream_keepalive_seconds,
    };
    let proxy = FeProxy::new(
        Arc::clone(&backends),
        handler,
        upstream,
        Arc::clone(&metrics),
        AccessLog {
            enabled: config.access_log,
        },
    );

    log_start_up(&config, &token);

    let opt = Opt {
        upgrade: options.upgrade,
        daemon: options.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, config.server);
    server.bootstrap();

    let mut proxy_service =
        pingora_proxy::http_proxy_service_with_name(&server.configuration, proxy, "doris-fe-proxy");
    proxy_service.add_tcp(&config.listen.to_string());
    server.add_service(proxy_service);
    server.add_service(health_service);

    if token.version_file().is_some() {
        let reloader = TokenReloader::new(
            Arc::clone(&token),
            Duration::from_millis(small_file.token_reload_interval_ms),
            Arc::clone(&metrics),
        );
        server.add_service(background_service("token reload", reloader));
    }

    if let Some(metrics_config) = &config.metrics {
        let mut metrics_service = pingora_prometheus::prometheus_http_service();
        metrics_service.add_tcp(&metrics_config.listen.to_string());
        server.add_service(metrics_service);
    }
    Ok(server)
}

fn open_store(config: &Config) -> Result<FileStore, ConfigError> {
    let small_file = &config.small_file;
    let url = StoreUrl::parse(&small_file.store, &config.base_dir)?;
    FileStore::open(
        &url,
        &small_file.s3,
        Duration::from_millis(small_file.store_timeout_ms),
        small_file.max_file_bytes,
    )
}

fn resolve_backends(config: &Config) -> Result<LoadBalancer<RoundRobin>, StartError> {
    LoadBalancer::try_from_iter(config.fe.backends.iter().map(String::as_str))
        .map_err(StartError::Backends)
}

fn log_start_up(config: &Config, token: &ClusterToken) {
    let small_file = &config.small_file;
    log::info!("proxy listener: {}", config.listen);
    log::info!("FE backends: {}", config.fe.backends.join(", "));
    log::info!("small-file store: {}", small_file.store);
    log::info!(
        "cache: {} bytes max, ttl {} s, negative ttl {} s for at most {} ids; FE fallback {}",
        small_file.cache.max_bytes,
        small_file.cache.ttl_seconds,
        small_file.cache.negative_ttl_seconds,
        small_file.cache.negative_max_entries,
        if small_file.fallback_to_fe {
            "on"
        } else {
            "off"
        },
    );
    log::info!("cluster token from {}", token.source_description());
    match &config.metrics {
        Some(metrics) => log::info!("metrics listener: {}", metrics.listen),
        None => log::info!("metrics listener: none"),
    }
}

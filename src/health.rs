//! The HTTP health check of FE backends: `GET /api/health`, healthy on status 200 with a
//! JSON body whose `code` is 0.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::{Error, ErrorType, Result};
use pingora_load_balancing::Backend;
use pingora_load_balancing::health_check::HealthCheck;

use crate::config::HealthCheckConfig;
use crate::metrics::Metrics;

/// Largest health response body read; the FE's is about 100 bytes.
const MAX_HEALTH_BODY_BYTES: usize = 64 * 1024;

/// Checks one FE with an HTTP request and logs every change of its health.
pub struct FeHealthCheck {
    client: reqwest::Client,
    path: String,
    consecutive_success: usize,
    consecutive_failure: usize,
    metrics: Arc<Metrics>,
}

impl FeHealthCheck {
    pub fn new(
        config: &HealthCheckConfig,
        metrics: Arc<Metrics>,
    ) -> std::result::Result<Self, reqwest::Error> {
        let timeout = Duration::from_millis(config.timeout_ms);
        // No pooling: every check opens a new connection, so a check also proves that the
        // FE still accepts connections.
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(FeHealthCheck {
            client,
            path: config.path.clone(),
            consecutive_success: config.consecutive_success,
            consecutive_failure: config.consecutive_failure,
            metrics,
        })
    }

    async fn probe(&self, target: &Backend) -> std::result::Result<(), String> {
        let addr = target
            .addr
            .as_inet()
            .ok_or_else(|| "backend is not an IP address".to_string())?;
        let url = format!("http://{addr}{}", self.path);
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_HEALTH_BODY_BYTES {
                return Err(format!("body over {MAX_HEALTH_BODY_BYTES} bytes"));
            }
        }
        health_body_ok(&body)
    }
}

/// Returns `Ok` when the body is JSON with `"code": 0`.
fn health_body_ok(body: &[u8]) -> std::result::Result<(), String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "body is not JSON".to_string())?;
    match json.get("code").and_then(serde_json::Value::as_i64) {
        Some(0) => Ok(()),
        Some(code) => Err(format!("JSON code {code}")),
        None => Err("JSON has no numeric `code`".to_string()),
    }
}

#[async_trait]
impl HealthCheck for FeHealthCheck {
    async fn check(&self, target: &Backend) -> Result<()> {
        match self.probe(target).await {
            Ok(()) => Ok(()),
            Err(reason) => {
                log::debug!("health check of FE {} failed: {reason}", target.addr);
                Error::e_explain(ErrorType::Custom("health check failed"), reason)
            }
        }
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            self.metrics.healthy_backends.inc();
            log::info!("FE backend {} is healthy again", target.addr);
        } else {
            self.metrics.healthy_backends.dec();
            log::warn!(
                "FE backend {} is unhealthy; no new requests go to it",
                target.addr
            );
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.consecutive_success
        } else {
            self.consecutive_failure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fe_health_body_accepted() {
        let body = br#"{"msg":"success","code":0,"data":{"online_backend_num":3,"total_backend_num":3},"count":0}"#;
        assert_eq!(health_body_ok(body), Ok(()));
    }

    #[test]
    fn bad_health_bodies_rejected() {
        assert!(health_body_ok(br#"{"code":1}"#).is_err());
        assert!(health_body_ok(br#"{"msg":"ok"}"#).is_err());
        assert!(health_body_ok(b"OK").is_err());
        assert!(health_body_ok(br#"{"code":"0"}"#).is_err());
    }
}

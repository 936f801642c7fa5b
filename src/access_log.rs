//! The access log: one line per request, with every `token=` value replaced by `***`.

use std::net::SocketAddr;
use std::time::Duration;

use pingora_proxy::Session;

/// Log target of access lines, so they can be filtered (`RUST_LOG=access=off`).
pub const ACCESS_LOG_TARGET: &str = "access";

/// Writes access lines at level info to target [`ACCESS_LOG_TARGET`] when enabled.
#[derive(Debug, Clone, Copy)]
pub struct AccessLog {
    pub enabled: bool,
}

impl AccessLog {
    /// Writes `client method target status bytes duration upstream` for one request.
    /// `upstream` is `local` for responses the proxy wrote itself and `-` when no FE was chosen.
    pub fn write(
        &self,
        session: &Session,
        status: Option<u16>,
        elapsed: Duration,
        upstream: Option<SocketAddr>,
        local: bool,
    ) {
        if !self.enabled {
            return;
        }
        let req = session.req_header();
        let target = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let client = session
            .client_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_else(|| "-".to_string());
        let status = status.map_or_else(|| "-".to_string(), |s| s.to_string());
        let upstream = match (local, upstream) {
            (true, _) => "local".to_string(),
            (false, Some(addr)) => addr.to_string(),
            (false, None) => "-".to_string(),
        };
        log::info!(
            target: ACCESS_LOG_TARGET,
            "{client} \"{} {}\" {status} {} {:.3}ms {upstream}",
            req.method,
            redact_token(target),
            session.body_bytes_sent(),
            elapsed.as_secs_f64() * 1000.0,
        );
    }
}

/// Replaces the value of every query parameter named `token` (in any case, percent-encoded
/// or not) with `***`. Everything else of the target stays as it was sent.
pub fn redact_token(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if is_token_name(name) && pair.len() > name.len() {
            out.push_str(name);
            out.push_str("=***");
        } else {
            out.push_str(pair);
        }
    }
    out
}

fn is_token_name(name: &str) -> bool {
    let decoded: String = form_urlencoded::parse(name.as_bytes())
        .next()
        .map(|(name, _)| name.into_owned())
        .unwrap_or_default();
    decoded.trim().eq_ignore_ascii_case("token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_file_token_redacted() {
        assert_eq!(
            redact_token("/api/get_small_file?token=secret&file_id=1"),
            "/api/get_small_file?token=***&file_id=1"
        );
        assert_eq!(
            redact_token("/api/get_small_file?file_id=1&token=secret"),
            "/api/get_small_file?file_id=1&token=***"
        );
    }

    #[test]
    fn every_token_redacted() {
        assert_eq!(
            redact_token("/api/bootstrap?token=a&token=b&TOKEN=c&%74oken=d"),
            "/api/bootstrap?token=***&token=***&TOKEN=***&%74oken=***"
        );
    }

    #[test]
    fn other_parameters_kept() {
        assert_eq!(
            redact_token("/a?tokens=1&my_token=2"),
            "/a?tokens=1&my_token=2"
        );
        assert_eq!(redact_token("/api/health"), "/api/health");
        assert_eq!(redact_token("/a?token"), "/a?token");
        assert_eq!(redact_token("/a?token=&x=1"), "/a?token=***&x=1");
    }
}

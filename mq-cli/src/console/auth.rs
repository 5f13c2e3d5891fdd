//! Who may do what: the token of the actions, cross-site request forgery
//! and DNS rebinding defences, and the response headers that keep the page
//! out of other sites' frames.
//!
//! Reads are open to whoever reaches the console (loopback by default).
//! A request that changes state must pass, in order: actions enabled
//! (403), an `Origin` that is the console itself when a browser sends one
//! (403), the token in `x-mq-token` (401), a JSON body (415). A page on
//! another site cannot set a custom header or a JSON content type without
//! a CORS preflight, which the console never answers with permission, and
//! it never learns the token.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use super::error::ApiError;
use super::Shared;

/// The header a page sends the token in.
pub(crate) const TOKEN_HEADER: &str = "x-mq-token";

/// A fresh token: 32 random bytes in hex, from the thread's generator (a
/// CSPRNG seeded by the operating system).
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The rules one console enforces.
pub(crate) struct Guard {
    addr: SocketAddr,
    token: Option<String>,
    any_host: bool,
}

impl Guard {
    /// For a console bound to `addr`; `token` is `None` when read-only.
    /// `any_host` (remote serving) accepts every `Host` header.
    pub(crate) fn new(addr: SocketAddr, token: Option<String>, any_host: bool) -> Self {
        Guard {
            addr,
            token,
            any_host,
        }
    }

    pub(crate) fn actions_enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `host` (a `Host` header) names this console. A page served
    /// from an attacker's name that resolves to 127.0.0.1 (DNS rebinding)
    /// sends its own name here, and is refused even for reads.
    fn host_allowed(&self, host: &str) -> bool {
        if self.any_host {
            return true;
        }
        let port = self.addr.port();
        let loopback = [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
            self.addr.to_string(),
        ];
        loopback
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// Checks a state-changing request's headers.
    fn check_action(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(expected) = &self.token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the console is read-only: start it with --allow-actions to change anything",
            ));
        };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if let Some(origin) = headers.get(header::ORIGIN) {
            let same = match (origin.to_str(), host) {
                (Ok(origin), Some(host)) => origin.eq_ignore_ascii_case(&format!("http://{host}")),
                _ => false,
            };
            if !same {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "cross-origin request refused: actions are taken from the console's own page only",
                ));
            }
        }
        let given = headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes);
        match given {
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("missing {TOKEN_HEADER} header: enter the token mq console printed"),
                ))
            }
            Some(given) if !same_secret(given, expected.as_bytes()) => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "wrong token: use the one mq console printed at start",
                ))
            }
            Some(_) => {}
        }
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "actions take a JSON body (content-type: application/json)",
            ));
        }
        Ok(())
    }
}

/// Compares secrets in time independent of where they differ, so response
/// times do not reveal a token prefix.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The middleware in front of every route.
pub(crate) async fn protect(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let guard = &state.guard;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !host.is_some_and(|h| guard.host_allowed(h)) {
        return ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "unexpected Host header: open the console by the address it printed",
        )
        .into_response();
    }
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if !reads {
        if let Err(refused) = guard.check_action(request.headers()) {
            return refused.into_response();
        }
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: Option<&str>) -> Guard {
        Guard::new(
            "127.0.0.1:8080".parse().expect("addr"),
            token.map(str::to_owned),
            false,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        map
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn hosts_other_than_the_console_are_refused() {
        let guard = guard(None);
        assert!(guard.host_allowed("127.0.0.1:8080"));
        assert!(guard.host_allowed("LOCALHOST:8080"));
        assert!(!guard.host_allowed("evil.example:8080"));
        assert!(!guard.host_allowed("127.0.0.1:9090"));
    }

    #[test]
    fn actions_need_every_check() {
        let ok = [
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("x-mq-token", "t0k"),
            ("content-type", "application/json"),
        ];
        let status = |guard: &Guard, pairs: &[(&'static str, &str)]| {
            guard
                .check_action(&headers(pairs))
                .err()
                .map(|e| e.status())
        };
        assert_eq!(status(&guard(Some("t0k")), &ok), None);
        assert_eq!(status(&guard(None), &ok), Some(StatusCode::FORBIDDEN));
        let mut cross = ok;
        cross[1].1 = "http://evil.example";
        assert_eq!(
            status(&guard(Some("t0k")), &cross),
            Some(StatusCode::FORBIDDEN)
        );
        let mut wrong = ok;
        wrong[2].1 = "t0K";
        assert_eq!(
            status(&guard(Some("t0k")), &wrong),
            Some(StatusCode::UNAUTHORIZED)
        );
        let mut form = ok;
        form[3].1 = "text/plain";
        assert_eq!(
            status(&guard(Some("t0k")), &form),
            Some(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }
}

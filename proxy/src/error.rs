//! The one place where a failure on the request path becomes an HTTP
//! response: status, a short plain-text body, and the metric label.

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::ProxyBody;
use crate::metrics::ClientErrorKind;

/// Who was denied, for the 403 page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub user: String,
    pub email: Option<String>,
    /// Where to sign out and in again as someone else.
    pub switch_url: String,
}

/// Why heim answered a request itself instead of a backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// A browser without a session: off to sign in (302 to `location`),
    /// with the cookie that binds the sign-in to this browser.
    #[error("sign-in needed")]
    SignIn {
        location: HeaderValue,
        set_cookie: HeaderValue,
    },
    /// A non-browser client without a session (401).
    #[error("authentication needed")]
    Unauthorized,
    /// A webhook without a valid signature (401, no challenge).
    #[error("webhook signature missing or wrong")]
    WebhookUnsigned,
    /// Signed in, but the route's policy does not admit the user (403 page
    /// that says who they are and how to switch).
    #[error("the route's policy denies this user")]
    Denied(Box<Denied>),
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("no route for this host and path")]
    NoRoute,
    #[error("the route's policy denies this request")]
    Forbidden,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("malformed request body")]
    MalformedBody,
    #[error("the client went away while sending its body")]
    ClientAborted,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("the client stopped sending its request")]
    ClientTimeout,
    #[error("the route has no upstream endpoint")]
    NoUpstream,
    #[error("could not connect to the upstream")]
    UpstreamConnect,
    #[error("every connection to the upstream is busy and the line is full")]
    UpstreamBusy,
    #[error("timed out connecting to the upstream")]
    UpstreamConnectTimeout,
    #[error("timed out waiting for the upstream's response")]
    UpstreamTimeout,
    #[error("the upstream broke the exchange")]
    UpstreamProtocol,
    /// Over a route's `limit-rps`, `limit-rpm` or `limit-connections`
    /// (503, as ingress-nginx's `limit-req-status-code`).
    #[error("rate limited: {0}")]
    Limited(&'static str),
    /// An auth step's own answer (basic auth's 401 challenge, an auth
    /// service's 401/403/500 or sign-in 302): the status with these headers.
    #[error("auth answered {status}")]
    AuthAnswer {
        status: StatusCode,
        headers: Vec<(http::HeaderName, HeaderValue)>,
    },
    /// A tunnel's agent is not connected, does not serve the service, or
    /// its local address refused (502, the reason in the body).
    #[error("tunnel: {0}")]
    Agent(String),
}

impl ProxyError {
    /// The status a client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::SignIn { .. } => StatusCode::FOUND,
            ProxyError::Unauthorized | ProxyError::WebhookUnsigned => StatusCode::UNAUTHORIZED,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::BadRequest(_) | ProxyError::MalformedBody | ProxyError::ClientAborted => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::NoUpstream | ProxyError::UpstreamBusy | ProxyError::Limited(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::AuthAnswer { status, .. } => *status,
            ProxyError::UpstreamConnect | ProxyError::UpstreamProtocol | ProxyError::Agent(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamConnectTimeout | ProxyError::UpstreamTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// The client's fault, for `heim_client_errors_total`; `None` for
    /// everything else (routing, policy, the upstream).
    pub fn client_error(&self) -> Option<ClientErrorKind> {
        Some(match self {
            ProxyError::BadRequest(_) | ProxyError::MethodNotAllowed => ClientErrorKind::BadRequest,
            ProxyError::MalformedBody => ClientErrorKind::MalformedBody,
            ProxyError::ClientAborted => ClientErrorKind::BodyAborted,
            ProxyError::BodyTooLarge => ClientErrorKind::BodyTooLarge,
            ProxyError::ClientTimeout => ClientErrorKind::BodyTimeout,
            _ => return None,
        })
    }

    /// A short plain-text response; it says what failed, never why in detail.
    pub fn response(&self) -> Response<ProxyBody> {
        let status = self.status();
        let (body, content_type) = match self {
            ProxyError::Denied(d) => (
                crate::auth::endpoints::denied_page(d),
                "text/html; charset=utf-8",
            ),
            ProxyError::Agent(why) => (
                format!(
                    "{} {}: {why}\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
                "text/plain; charset=utf-8",
            ),
            _ => (
                format!(
                    "{} {}\n",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                ),
                "text/plain; charset=utf-8",
            ),
        };
        let mut resp = Response::new(ProxyBody::local(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        match self {
            ProxyError::SignIn {
                location,
                set_cookie,
            } => {
                h.insert(header::LOCATION, location.clone());
                h.insert(header::SET_COOKIE, set_cookie.clone());
            }
            ProxyError::Unauthorized => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"heim\""),
                );
            }
            ProxyError::AuthAnswer { headers, .. } => {
                for (name, value) in headers {
                    h.append(name.clone(), value.clone());
                }
            }
            _ => {}
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if matches!(self, ProxyError::Denied(_)) {
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                ),
            );
        }
        if matches!(self, ProxyError::BadRequest(_) | ProxyError::MalformedBody) {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

//! The built-in whoami backend (`echo = true`): answers with a JSON
//! document of the request as a backend would see it, after heim's header
//! rewriting. For debugging a deployment, and for tests.
//!
//! It never echoes the request body.

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response};
use serde_json::{json, Map, Value};

use crate::body::ProxyBody;
use crate::service::ConnCtx;

/// The echo response for a prepared request.
pub fn respond<B>(
    req: &Request<B>,
    conn: &ConnCtx,
    route: &str,
    host: &str,
    request_id: &HeaderValue,
    client: std::net::IpAddr,
    session: Option<&crate::auth::policy::Session>,
) -> Response<ProxyBody> {
    let mut headers = Map::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(s)) => {
                s.push_str(", ");
                s.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    let tls = conn
        .tls
        .as_ref()
        .map(|t| json!({ "sni": t.sni, "alpn": t.alpn, "version": t.version }));
    let doc = json!({
        "method": req.method().as_str(),
        "host": host,
        "path": req.uri().path(),
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
        "remote_addr": client.to_string(),
        "tls": tls,
        "route": route,
        "request_id": request_id.to_str().unwrap_or(""),
        "identity": session.map(|s| json!({
            "user": s.user,
            "email": s.email,
            "groups": s.groups,
            "github_orgs": s.orgs,
            "github_teams": s.teams,
            "provider": s.provider,
        })),
    });
    let mut body = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    body.push(b'\n');
    let mut resp = Response::new(ProxyBody::local(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

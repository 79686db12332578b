//! oauth2-proxy's own paths (`/oauth2/start`, `/oauth2/sign_in`,
//! `/oauth2/sign_out`, `/oauth2/auth`, `/oauth2/userinfo`), answered by
//! heim on the hosts whose Ingresses used oauth2-proxy through
//! ingress-nginx's `auth-url` and are now served by heim's sign-in: the
//! bookmarks, "sign out" links and probes that named them keep working
//! after oauth2-proxy is gone.
//!
//! `rd` is followed only to a path on the same host or an https URL of the
//! same host (no open redirect); anything else returns to `/`.

use http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::auth::policy::Session;
use crate::body::ProxyBody;
use crate::error::ProxyError;

/// The answer for `path` (under `/oauth2/`) on `host`, whose origin is
/// `here_origin`; `session` is the request's heim session, if any.
pub fn answer<B>(
    req: &Request<B>,
    host: &str,
    here_origin: &str,
    auth_origin: &str,
    session: Option<&Session>,
    rules: Option<&crate::auth::policy::AccessRules>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let path = req.uri().path();
    let rd = || {
        let raw = req
            .uri()
            .query()
            .and_then(|q| crate::auth::endpoints::query_param(q, "rd"))
            .unwrap_or_default();
        format!("{here_origin}{}", same_host_path(&raw, host))
    };
    match path {
        "/oauth2/start" | "/oauth2/sign_in" if req.method() == Method::GET => {
            let target = rd();
            if session.is_some() {
                return found(&target);
            }
            let (location, cookie) = crate::auth::endpoints::sign_in_redirect(auth_origin, &target);
            match (
                HeaderValue::from_str(&location),
                HeaderValue::from_str(&cookie),
            ) {
                (Ok(location), Ok(set_cookie)) => Err(ProxyError::SignIn {
                    location,
                    set_cookie,
                }),
                _ => Err(ProxyError::BadRequest("invalid rd")),
            }
        }
        "/oauth2/sign_out" => found(&format!(
            "{auth_origin}/.heim/logout?rd={}",
            crate::auth::endpoints::url_encode(&rd())
        )),
        // As oauth2-proxy's own check: the session, and the rules the host's
        // sign-in stands for (its allowed groups, emails, domains).
        "/oauth2/auth" => match session {
            Some(s) if rules.is_some_and(|r| !r.allows(s)) => Err(ProxyError::Forbidden),
            Some(_) => {
                let mut resp = Response::new(ProxyBody::local(""));
                *resp.status_mut() = StatusCode::ACCEPTED;
                Ok(resp)
            }
            None => Err(ProxyError::Unauthorized),
        },
        "/oauth2/userinfo" => match session {
            Some(s) => {
                let body = serde_json::json!({
                    "user": s.user,
                    "email": s.email,
                    "groups": s.groups,
                })
                .to_string();
                let mut resp = Response::new(ProxyBody::local(body));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(resp)
            }
            None => Err(ProxyError::Unauthorized),
        },
        _ => Err(ProxyError::NoRoute),
    }
}

/// The path part of `rd` when it names this host (a path, or an https
/// URL whose host is `host`), else `/`.
fn same_host_path(rd: &str, host: &str) -> String {
    let path = if let Some(rest) = rd.strip_prefix("https://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let name = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
        if !name.eq_ignore_ascii_case(host) || authority.contains('@') {
            return "/".into();
        }
        if path.is_empty() {
            "/"
        } else {
            path
        }
    } else {
        rd
    };
    let safe = path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && path.bytes().all(|b| b.is_ascii_graphic());
    if safe {
        path.to_string()
    } else {
        "/".into()
    }
}

fn found(location: &str) -> Result<Response<ProxyBody>, ProxyError> {
    let location =
        HeaderValue::from_str(location).map_err(|_| ProxyError::BadRequest("invalid rd"))?;
    let mut resp = Response::new(ProxyBody::local(""));
    *resp.status_mut() = StatusCode::FOUND;
    resp.headers_mut().insert(http::header::LOCATION, location);
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rd_stays_on_the_host() {
        for (rd, want) in [
            ("/app?x=1", "/app?x=1"),
            ("https://grafana.example.com/d/1", "/d/1"),
            ("https://GRAFANA.example.com:8443", "/"),
            ("https://evil.example/x", "/"),
            ("https://grafana.example.com@evil.example/x", "/"),
            ("//evil.example/x", "/"),
            ("/\\evil.example", "/"),
            ("http://grafana.example.com/x", "/"),
            ("javascript:alert(1)", "/"),
            ("", "/"),
        ] {
            assert_eq!(same_host_path(rd, "grafana.example.com"), want, "{rd}");
        }
    }

    #[test]
    fn paths_answer_as_oauth2_proxy() {
        let req = |p: &str| Request::get(p).body(()).unwrap();
        let here = "https://grafana.example.com";
        let auth = "https://auth.example.com";
        let user = Session {
            user: "ada".into(),
            email: Some("ada@example.com".into()),
            groups: Vec::new(),
            orgs: Vec::new(),
            teams: Vec::new(),
            provider: "local".into(),
            expires: u64::MAX,
            id: "s1".into(),
            host: "grafana.example.com".into(),
        };
        // Without a session, start is heim's sign-in, back to rd.
        match answer(
            &req("/oauth2/start?rd=%2Fd%2F1"),
            "grafana.example.com",
            here,
            auth,
            None,
            None,
        ) {
            Err(ProxyError::SignIn { location, .. }) => {
                let l = location.to_str().unwrap();
                assert!(
                    l.starts_with("https://auth.example.com/.heim/login?rd="),
                    "{l}"
                );
                assert!(l.contains("grafana.example.com%2Fd%2F1"), "{l}");
            }
            other => panic!("{other:?}"),
        }
        // With one, straight back.
        let r = answer(
            &req("/oauth2/sign_in?rd=/d/1"),
            "grafana.example.com",
            here,
            auth,
            Some(&user),
            None,
        )
        .unwrap();
        assert_eq!(r.headers()["location"], "https://grafana.example.com/d/1");
        let r = answer(
            &req("/oauth2/sign_out?rd=https://evil.example/"),
            "grafana.example.com",
            here,
            auth,
            Some(&user),
            None,
        )
        .unwrap();
        assert_eq!(
            r.headers()["location"],
            "https://auth.example.com/.heim/logout?rd=https%3A%2F%2Fgrafana.example.com%2F"
        );
        let r = answer(
            &req("/oauth2/auth"),
            "grafana.example.com",
            here,
            auth,
            Some(&user),
            None,
        )
        .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert!(matches!(
            answer(
                &req("/oauth2/auth"),
                "grafana.example.com",
                here,
                auth,
                None,
                None
            ),
            Err(ProxyError::Unauthorized)
        ));
        // The host's rules (oauth2-proxy's allowed_groups…) hold for the probe.
        let admins = crate::auth::policy::AccessRules {
            groups: vec!["admins".into()],
            ..Default::default()
        };
        assert!(matches!(
            answer(
                &req("/oauth2/auth"),
                "grafana.example.com",
                here,
                auth,
                Some(&user),
                Some(&admins)
            ),
            Err(ProxyError::Forbidden)
        ));
        assert!(matches!(
            answer(
                &req("/oauth2/callback"),
                "grafana.example.com",
                here,
                auth,
                Some(&user),
                None
            ),
            Err(ProxyError::NoRoute)
        ));
    }
}

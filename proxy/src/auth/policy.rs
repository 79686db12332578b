//! Who may use a route: the signed-in user's session against the route's
//! allow rules. Deny by default: a route with no rule admits nobody.

use serde::{Deserialize, Serialize};

/// A signed-in user, as the session cookie (or a CLI token) carries it.
/// Compact field names keep the cookie small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The user's name at the provider (login, email or `sub`).
    #[serde(rename = "u")]
    pub user: String,
    /// A verified email, if the provider gave one.
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Groups (OIDC), as far as some route's policy names them.
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// GitHub organisations (lowercase logins).
    #[serde(rename = "o", default, skip_serializing_if = "Vec::is_empty")]
    pub orgs: Vec<String>,
    /// GitHub teams as `org/team-slug` (lowercase).
    #[serde(rename = "t", default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// The provider's configured name.
    #[serde(rename = "p")]
    pub provider: String,
    /// Unix seconds after which the session is void.
    #[serde(rename = "x")]
    pub expires: u64,
    /// Random id, for revocation at logout.
    #[serde(rename = "i")]
    pub id: String,
    /// The host whose cookie this is: a cookie opens on its own host only
    /// (empty in a CLI token, which any host accepts).
    #[serde(rename = "h", default)]
    pub host: String,
}

impl Session {
    /// The email's domain, when the email is well formed (exactly one `@`).
    pub fn email_domain(&self) -> Option<&str> {
        valid_email(self.email.as_deref()?).map(|(_, d)| d)
    }
}

/// `local@domain` with exactly one `@` and neither part empty.
pub fn valid_email(email: &str) -> Option<(&str, &str)> {
    let (local, domain) = email.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@')).then_some((local, domain))
}

/// The allow rules of a route; any one that matches admits the user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessRules {
    pub any_authenticated: bool,
    /// Lowercase.
    pub emails: Vec<String>,
    /// Lowercase.
    pub domains: Vec<String>,
    pub groups: Vec<String>,
    /// Lowercase.
    pub github_orgs: Vec<String>,
    /// `org/team`, lowercase.
    pub github_teams: Vec<String>,
}

impl AccessRules {
    /// True when no rule is set: nobody is admitted.
    pub fn is_empty(&self) -> bool {
        *self == AccessRules::default()
    }

    /// True when `s` may use the route.
    pub fn allows(&self, s: &Session) -> bool {
        if self.any_authenticated {
            return true;
        }
        let email = s
            .email
            .as_deref()
            .filter(|e| valid_email(e).is_some())
            .map(str::to_ascii_lowercase);
        if let Some(e) = &email {
            if self.emails.iter().any(|a| a == e) {
                return true;
            }
        }
        if let Some(d) = s.email_domain() {
            if self.domains.iter().any(|a| a.eq_ignore_ascii_case(d)) {
                return true;
            }
        }
        self.groups.iter().any(|g| s.groups.contains(g))
            || self.github_orgs.iter().any(|o| s.orgs.contains(o))
            || self.github_teams.iter().any(|t| s.teams.contains(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(email: Option<&str>) -> Session {
        Session {
            user: "alice".into(),
            email: email.map(str::to_string),
            groups: vec!["ops".into()],
            orgs: vec!["ictsc".into()],
            teams: vec!["ictsc/staff".into()],
            provider: "p".into(),
            expires: 0,
            id: "x".into(),
            host: String::new(),
        }
    }

    #[test]
    fn rules() {
        let s = session(Some("Alice@Example.com"));
        let r = |f: fn(&mut AccessRules)| {
            let mut r = AccessRules::default();
            f(&mut r);
            r
        };
        assert!(!AccessRules::default().allows(&s), "deny by default");
        assert!(r(|r| r.any_authenticated = true).allows(&s));
        assert!(r(|r| r.emails = vec!["alice@example.com".into()]).allows(&s));
        assert!(r(|r| r.domains = vec!["example.com".into()]).allows(&s));
        assert!(!r(|r| r.domains = vec!["ample.com".into()]).allows(&s));
        assert!(r(|r| r.groups = vec!["ops".into()]).allows(&s));
        assert!(!r(|r| r.groups = vec!["Ops".into()]).allows(&s));
        assert!(r(|r| r.github_orgs = vec!["ictsc".into()]).allows(&s));
        assert!(r(|r| r.github_teams = vec!["ictsc/staff".into()]).allows(&s));
        assert!(!r(|r| r.github_teams = vec!["ictsc/admins".into()]).allows(&s));
    }

    #[test]
    fn an_email_with_two_ats_matches_nothing() {
        let s = session(Some("mallory@evil.com@example.com"));
        let mut r = AccessRules {
            domains: vec!["example.com".into()],
            ..AccessRules::default()
        };
        assert!(!r.allows(&s));
        r.emails = vec!["mallory@evil.com@example.com".into()];
        assert!(!r.allows(&s));
        assert_eq!(valid_email("@example.com"), None);
        assert_eq!(valid_email("a@"), None);
    }
}

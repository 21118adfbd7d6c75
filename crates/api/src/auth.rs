//! Who may call the API: bearer tokens, each with a scope, kept only as SHA-256 digests.
//!
//! A token is a high-entropy secret made by `mekong token create` and shown once; the
//! platform keeps its digest, so a leaked registry or config does not leak a usable token
//! (a slow password hash would add nothing for a 256-bit random secret). `read` is for data;
//! `admin` also for the rejection log, device management and anything that changes state.
//! With no token configured the API is anonymous; the binary then serves it on loopback
//! only, unless told otherwise.

use std::fmt;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a token may do. `Admin` includes `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Devices, series, points, aggregates, latest values, counters.
    Read,
    /// Also the rejection log, device management, and anything that changes state.
    Admin,
}

impl Scope {
    /// The scope's name in the registry and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `name`.
    pub fn parse(name: &str) -> Option<Scope> {
        [Scope::Read, Scope::Admin].into_iter().find(|s| s.as_str() == name)
    }
}

/// The SHA-256 digest of a token. Its `Debug` shows a prefix only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    /// The digest of `token`, as presented by a client.
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }

    /// Equality that takes the same time wherever the digests differ.
    fn matches(&self, other: &TokenDigest) -> bool {
        self.0.iter().zip(other.0).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({:02x}{:02x}..)", self.0[0], self.0[1])
    }
}

/// A token the API accepts.
#[derive(Debug, Clone)]
pub struct ApiToken {
    /// Who holds it, for the logs.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// Its digest.
    pub digest: TokenDigest,
}

/// The API's access rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<ApiToken>,
    /// `/metrics` answers without a token.
    pub metrics_open: bool,
}

impl Access {
    /// No tokens: every request is let in. The binary allows this on loopback only.
    pub fn anonymous() -> Access {
        Access { tokens: Vec::new(), metrics_open: true }
    }

    /// Only requests with one of `tokens`, of a sufficient scope.
    pub fn tokens(tokens: Vec<ApiToken>, metrics_open: bool) -> Access {
        Access { tokens, metrics_open }
    }

    /// Whether any token is configured (else the API is anonymous).
    pub fn is_anonymous(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The name of the token an `Authorization` header carries, if it grants `needed`.
    /// 401 without a valid token, 403 with a valid one of too small a scope. The error never
    /// repeats what the client sent.
    pub fn check(&self, authorization: Option<&[u8]>, needed: Scope) -> Result<Option<&str>, ApiError> {
        if self.is_anonymous() {
            return Ok(None);
        }
        let presented = authorization
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".into()))?;
        let digest = TokenDigest::of(presented);
        // Every token is compared, so the time taken does not tell which one was close.
        let found = self.tokens.iter().fold(None, |found, t| if t.digest.matches(&digest) { Some(t) } else { found });
        let token = found.ok_or_else(|| ApiError::Unauthorized("the bearer token is not valid".into()))?;
        if token.scope < needed {
            return Err(ApiError::Forbidden(format!(
                "token {:?} has scope {}, this needs {}",
                token.name,
                token.scope.as_str(),
                needed.as_str()
            )));
        }
        Ok(Some(&token.name))
    }
}

/// Middleware: lets a request through only with a token of scope `needed`.
pub async fn require(State((access, needed)): State<(Arc<Access>, Scope)>, request: Request, next: Next) -> Response {
    let header = request.headers().get(AUTHORIZATION).map(|h| h.as_bytes());
    match access.check(header, needed) {
        Ok(_) => next.run(request).await,
        Err(e) => {
            tracing::info!(path = request.uri().path(), error = %e, "api request refused");
            e.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let token =
            |name: &str, scope, secret: &str| ApiToken { name: name.into(), scope, digest: TokenDigest::of(secret) };
        Access::tokens(vec![token("app", Scope::Read, "mkt_read"), token("ops", Scope::Admin, "mkt_admin")], false)
    }

    fn check(header: Option<&str>, needed: Scope) -> Result<Option<String>, u16> {
        access()
            .check(header.map(str::as_bytes), needed)
            .map(|name| name.map(str::to_owned))
            .map_err(|e| e.into_response().status().as_u16())
    }

    #[test]
    fn tokens_grant_their_scope_and_nothing_else() {
        assert_eq!(check(Some("Bearer mkt_read"), Scope::Read), Ok(Some("app".into())));
        assert_eq!(check(Some("Bearer mkt_admin"), Scope::Read), Ok(Some("ops".into())));
        assert_eq!(check(Some("Bearer mkt_admin"), Scope::Admin), Ok(Some("ops".into())));
        assert_eq!(check(Some("Bearer mkt_read"), Scope::Admin), Err(403));
        for bad in [None, Some("mkt_read"), Some("Bearer "), Some("Bearer mkt_reaD"), Some("Basic bWt0X3JlYWQ=")] {
            assert_eq!(check(bad, Scope::Read), Err(401), "{bad:?}");
        }
    }

    #[test]
    fn without_tokens_everyone_is_let_in() {
        assert_eq!(Access::anonymous().check(None, Scope::Admin).ok(), Some(None));
    }

    #[test]
    fn refusals_and_debug_output_do_not_repeat_the_secret() {
        let e = access().check(Some(b"Bearer mkt_wrong_secret"), Scope::Read).unwrap_err();
        assert!(!e.to_string().contains("mkt_wrong_secret"));
        assert!(!format!("{:?}", access()).contains("mkt_read"));
        assert_eq!(Scope::parse("admin"), Some(Scope::Admin));
        assert_eq!(Scope::parse("root"), None);
    }
}

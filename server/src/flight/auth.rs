//! Flight SQL authentication (DESIGN §6): the client sends `Basic user:password`
//! on the Handshake call and gets a `Bearer` token back (response header
//! `authorization` and the handshake payload); every later call carries that
//! token. [`AuthLayer`] checks it for every gRPC method except Handshake, so no
//! handler can forget to.
//!
//! With authentication off (no user configured, loopback only) every call is let
//! through, and a Handshake still answers with a token so clients that always
//! log in work unchanged.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::alphabet::STANDARD as ALPHABET;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;

/// The gRPC path of the Flight Handshake method, the one call without a token.
pub const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// Checks passwords, issues Bearer tokens and checks them.
#[derive(Debug)]
pub struct Authenticator {
    credentials: Option<(String, String)>,
    ttl: Duration,
    tokens: Mutex<HashMap<String, Instant>>,
}

impl Authenticator {
    /// Authentication with one user; `None` turns it off.
    pub fn new(credentials: Option<(String, String)>, ttl: Duration) -> Self {
        Self {
            credentials,
            ttl,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// Whether calls need a token.
    pub fn enabled(&self) -> bool {
        self.credentials.is_some()
    }

    /// Checks `Basic` credentials (an `authorization` header value, or the
    /// user/password of a handshake payload) and issues a token.
    pub fn login(&self, user: &str, password: &str) -> Result<String, Status> {
        if let Some((want_user, want_password)) = &self.credentials {
            let user_ok = constant_time_eq(user.as_bytes(), want_user.as_bytes());
            let password_ok = constant_time_eq(password.as_bytes(), want_password.as_bytes());
            if !(user_ok && password_ok) {
                return Err(Status::unauthenticated("invalid user or password"));
            }
        }
        let token = super::random_hex(24);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tokens.retain(|_, expires| *expires > now);
        tokens.insert(token.clone(), now + self.ttl);
        Ok(token)
    }

    /// Checks an `authorization` header value: a valid `Bearer` token, or
    /// correct `Basic` credentials.
    pub fn check(&self, header: Option<&str>) -> Result<(), Status> {
        if !self.enabled() {
            return Ok(());
        }
        let header = header.ok_or_else(|| {
            Status::unauthenticated("authentication required: no authorization header")
        })?;
        if let Some((user, password)) = parse_basic(header)? {
            return self.login(&user, &password).map(|_| ());
        }
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be Bearer or Basic"))?;
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token.trim()) {
            Some(expires) if *expires > Instant::now() => Ok(()),
            Some(_) => Err(Status::unauthenticated("token expired: log in again")),
            None => Err(Status::unauthenticated("invalid token")),
        }
    }
}

/// Base64 with or without `=` padding: Go's Flight client (ADBC) sends it unpadded.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &ALPHABET,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Splits a `Basic base64(user:password)` header; `Ok(None)` for other schemes.
pub fn parse_basic(header: &str) -> Result<Option<(String, String)>, Status> {
    let Some(encoded) = header.strip_prefix("Basic ") else {
        return Ok(None);
    };
    let bad = || Status::unauthenticated("malformed Basic authorization header");
    let decoded = BASE64.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some((user.to_owned(), password.to_owned())))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Tower layer that refuses calls without a valid token (all but Handshake).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    /// Checks calls against `auth`.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// The service [`AuthLayer`] wraps around the gRPC router.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != HANDSHAKE_PATH {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if let Err(status) = self.auth.check(header) {
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        // The clone is the ready one's twin; swap so the ready service handles this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move { inner.call(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
    }

    #[test]
    fn tokens_come_from_the_right_password_only() {
        let auth = Authenticator::new(
            Some(("alice".into(), "s3cret!".into())),
            Duration::from_secs(60),
        );
        let err = auth.login("alice", "wrong").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let token = auth.login("alice", "s3cret!").unwrap();
        auth.check(Some(&format!("Bearer {token}"))).unwrap();
        assert!(auth.check(Some("Bearer nope")).is_err());
        assert!(auth.check(None).is_err());
        auth.check(Some(&basic("alice", "s3cret!"))).unwrap();
        assert!(basic("alice", "s3cret!").ends_with('='));
        let unpadded = basic("alice", "s3cret!").trim_end_matches('=').to_owned();
        auth.check(Some(&unpadded)).unwrap();
        assert!(auth.check(Some(&basic("alice", "x"))).is_err());
        assert!(auth.check(Some("Basic !!!")).is_err());
    }

    #[test]
    fn tokens_expire() {
        let auth = Authenticator::new(Some(("a".into(), "b".into())), Duration::ZERO);
        let token = auth.login("a", "b").unwrap();
        let err = auth.check(Some(&format!("Bearer {token}"))).unwrap_err();
        assert!(err.message().contains("expired"), "{err}");
    }

    #[test]
    fn off_lets_everything_through() {
        let auth = Authenticator::new(None, Duration::from_secs(1));
        auth.check(None).unwrap();
        assert!(!auth.login("any", "thing").unwrap().is_empty());
    }
}

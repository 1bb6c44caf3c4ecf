//! Authentication and roles (DESIGN §6), for Flight SQL and HTTP alike: the
//! client sends `Basic user:password` on the Handshake call and gets a
//! `Bearer` token back (response header `authorization` and the handshake
//! payload); every later call carries that token, or Basic credentials again.
//! [`AuthLayer`] checks every gRPC method except Handshake, so no handler can
//! forget to, and hands the caller's [`Identity`] (user and [`Role`]) to the
//! handlers as a request extension.
//!
//! - Passwords of `[[auth.users]]` are argon2 hashes, verified off the async
//!   threads; the single `auth.user`/`auth.password` of older configs is an
//!   admin with a clear-text password.
//! - Failed logins are logged with the peer and user, counted, and slowed per
//!   peer address: after each failure the address's next attempt is held back
//!   (50 ms, doubling with each further failure up to 30 s; a success clears
//!   it), and while [`MAX_WAITING`] attempts of one address wait, more are
//!   refused unchecked. Guessing runs at a few tries a minute, not thousands a
//!   second, and a user who mistyped once only waits a moment.
//! - A Basic-authenticated call is checked, not given a token; tokens come from
//!   Handshake only, expire after `auth.token_ttl_secs`, and at most
//!   [`MAX_TOKENS`] live at once (expired ones are swept, then the oldest go).
//!
//! With authentication off (no user configured, loopback only) every call is
//! let through as an admin, and a Handshake still answers with a token so
//! clients that always log in work unchanged.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::alphabet::STANDARD as ALPHABET;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;
use tracing::warn;

pub use crate::config::Role;
use crate::config::{Auth, User};

/// The gRPC path of the Flight Handshake method, the one call without a token.
pub const HANDSHAKE_PATH: &str = "/arrow.flight.protocol.FlightService/Handshake";

/// Most Bearer tokens kept at once.
pub const MAX_TOKENS: usize = 10_000;
/// Most peer addresses whose failed logins are remembered.
const MAX_PEERS: usize = 10_000;
/// The wait after a peer's first failed login; it doubles with each further one.
const FIRST_WAIT: Duration = Duration::from_millis(50);
/// The longest wait between a peer's attempts.
const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// Attempts of one address held back at once; more are refused.
pub const MAX_WAITING: u32 = 4;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user name (`anonymous` with authentication off).
    pub user: String,
    /// What the user may do.
    pub role: Role,
}

impl Identity {
    /// The caller when authentication is off: everyone is an admin.
    pub fn anonymous() -> Self {
        Self {
            user: "anonymous".to_owned(),
            role: Role::Admin,
        }
    }

    /// Fails with PermissionDenied unless the caller has at least `role`.
    pub fn require(&self, role: Role, what: &str) -> Result<(), Status> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{what} needs the {role} role; user {:?} has {}",
                self.user, self.role
            )))
        }
    }
}

/// How a user's password is checked.
#[derive(Debug)]
enum Secret {
    /// `auth.password`, compared in constant time.
    Clear(String),
    /// An argon2 PHC string.
    Hash(String),
}

#[derive(Debug)]
struct Account {
    secret: Secret,
    role: Role,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    wait_until: Instant,
    waiting: u32,
}

/// Checks passwords, issues Bearer tokens and checks them.
#[derive(Debug)]
pub struct Authenticator {
    accounts: Arc<HashMap<String, Account>>,
    ttl: Duration,
    tokens: Mutex<HashMap<String, (Identity, Instant)>>,
    max_tokens: usize,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    failed_logins: AtomicU64,
}

impl Authenticator {
    /// Authentication with the users of `auth` (off when there are none).
    pub fn new(auth: &Auth) -> Self {
        let mut accounts = HashMap::new();
        for User {
            name,
            password_hash,
            role,
        } in &auth.users
        {
            accounts.insert(
                name.clone(),
                Account {
                    secret: Secret::Hash(password_hash.clone()),
                    role: *role,
                },
            );
        }
        if let (Some(user), Some(password)) = (&auth.user, &auth.password) {
            accounts.insert(
                user.clone(),
                Account {
                    secret: Secret::Clear(password.clone()),
                    role: Role::Admin,
                },
            );
        }
        Self {
            accounts: Arc::new(accounts),
            ttl: Duration::from_secs(auth.token_ttl_secs),
            tokens: Mutex::new(HashMap::new()),
            max_tokens: MAX_TOKENS,
            failures: Mutex::new(HashMap::new()),
            failed_logins: AtomicU64::new(0),
        }
    }

    /// Whether calls need credentials.
    pub fn enabled(&self) -> bool {
        !self.accounts.is_empty()
    }

    /// Failed logins since start (for `/metrics`).
    pub fn failed_logins(&self) -> u64 {
        self.failed_logins.load(Ordering::Relaxed)
    }

    /// Bearer tokens alive now.
    pub fn live_tokens(&self) -> usize {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Checks a user's password (throttled per `peer`) and issues a token.
    pub async fn login(
        &self,
        peer: Option<IpAddr>,
        user: &str,
        password: &str,
    ) -> Result<(String, Identity), Status> {
        let identity = self.verify(peer, user, password).await?;
        let token = super::random_hex(24);
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        tokens.retain(|_, (_, expires)| *expires > now);
        if tokens.len() >= self.max_tokens
            && let Some(oldest) = tokens
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(t, _)| t.clone())
        {
            tokens.remove(&oldest);
        }
        tokens.insert(token.clone(), (identity.clone(), now + self.ttl));
        Ok((token, identity))
    }

    /// Checks an `authorization` header value: a valid `Bearer` token, or
    /// correct `Basic` credentials (checked, no token issued).
    pub async fn check(
        &self,
        peer: Option<IpAddr>,
        header: Option<&str>,
    ) -> Result<Identity, Status> {
        if !self.enabled() {
            return Ok(Identity::anonymous());
        }
        let header = header.ok_or_else(|| {
            Status::unauthenticated("authentication required: no authorization header")
        })?;
        if let Some((user, password)) = parse_basic(header)? {
            return self.verify(peer, &user, &password).await;
        }
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be Bearer or Basic"))?;
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match tokens.get(token.trim()) {
            Some((identity, expires)) if *expires > Instant::now() => Ok(identity.clone()),
            Some(_) => Err(Status::unauthenticated("token expired: log in again")),
            None => Err(Status::unauthenticated("invalid token")),
        }
    }

    /// Checks a user and password; a failure is logged, counted and makes the
    /// peer wait before its next attempt.
    async fn verify(
        &self,
        peer: Option<IpAddr>,
        user: &str,
        password: &str,
    ) -> Result<Identity, Status> {
        if !self.enabled() {
            return Ok(Identity::anonymous());
        }
        let address = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        match self.hold_back(address) {
            HoldBack::No => {}
            HoldBack::For(wait, _waiting) => tokio::time::sleep(wait).await,
            HoldBack::Refused => {
                self.failed_logins.fetch_add(1, Ordering::Relaxed);
                warn!(peer = %address, user, "login refused: too many attempts waiting after failed logins");
                return Err(Status::unauthenticated(format!(
                    "too many failed logins from {address}: try again later"
                )));
            }
        }
        let accounts = Arc::clone(&self.accounts);
        let (name, given) = (user.to_owned(), password.to_owned());
        // Hashing takes milliseconds of CPU: keep it off the async threads.
        let role = tokio::task::spawn_blocking(move || password_matches(&accounts, &name, &given))
            .await
            .map_err(|e| Status::internal(format!("password check failed: {e}")))?;
        match role {
            Some(role) => {
                self.failures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&address);
                Ok(Identity {
                    user: user.to_owned(),
                    role,
                })
            }
            None => {
                self.failed_logins.fetch_add(1, Ordering::Relaxed);
                self.record_failure(address);
                warn!(peer = %address, user, "failed login");
                Err(Status::unauthenticated("invalid user or password"))
            }
        }
    }

    /// Whether an attempt of `address` waits first (and how long), or is
    /// refused because enough of its attempts wait already.
    fn hold_back(&self, address: IpAddr) -> HoldBack<'_> {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = failures.get_mut(&address) else {
            return HoldBack::No;
        };
        let Some(wait) = entry.wait_until.checked_duration_since(Instant::now()) else {
            return HoldBack::No;
        };
        if entry.waiting >= MAX_WAITING {
            return HoldBack::Refused;
        }
        entry.waiting += 1;
        HoldBack::For(
            wait,
            Waiting {
                auth: self,
                address,
            },
        )
    }

    fn record_failure(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if failures.len() >= MAX_PEERS {
            failures.retain(|_, f| f.wait_until > now);
        }
        let entry = failures.entry(address).or_insert(Failures {
            count: 0,
            wait_until: now,
            waiting: 0,
        });
        entry.count = entry.count.saturating_add(1);
        let wait = FIRST_WAIT
            .saturating_mul(1u32 << (entry.count - 1).min(20))
            .min(LONGEST_WAIT);
        entry.wait_until = now + wait;
    }
}

enum HoldBack<'a> {
    No,
    /// Wait this long; the guard counts the attempt as waiting until dropped.
    For(Duration, Waiting<'a>),
    Refused,
}

/// An attempt that is waiting (counted against [`MAX_WAITING`]).
struct Waiting<'a> {
    auth: &'a Authenticator,
    address: IpAddr,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut failures = self.auth.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = failures.get_mut(&self.address) {
            entry.waiting = entry.waiting.saturating_sub(1);
        }
    }
}

/// The user's role if `password` is theirs.
fn password_matches(
    accounts: &HashMap<String, Account>,
    user: &str,
    password: &str,
) -> Option<Role> {
    let account = accounts.get(user);
    let ok = match account.map(|a| &a.secret) {
        Some(Secret::Clear(want)) => constant_time_eq(password.as_bytes(), want.as_bytes()),
        Some(Secret::Hash(phc)) => PasswordHash::new(phc).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        }),
        None => false,
    };
    account.filter(|_| ok).map(|a| a.role)
}

/// An argon2id PHC string for `password` with a random salt (`recon hash-password`).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::SaltString;
    use rand::RngCore;
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The peer address tonic records for a connection (plain TCP or TLS).
pub fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|t| t.get_ref().remote_addr())
        })
        .map(|a| a.ip())
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is the ready one's twin; swap so the ready service handles this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = Arc::clone(&self.auth);
        Box::pin(async move {
            if request.uri().path() != HANDSHAKE_PATH {
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let peer = peer_of(request.extensions());
                match auth.check(peer, header).await {
                    Ok(identity) => {
                        request.extensions_mut().insert(identity);
                    }
                    Err(status) => return Ok(status.into_http()),
                }
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
    }

    fn auth_with(users: Vec<User>, admin: Option<(&str, &str)>, ttl: u64) -> Authenticator {
        Authenticator::new(&Auth {
            user: admin.map(|(u, _)| u.to_owned()),
            password: admin.map(|(_, p)| p.to_owned()),
            users,
            token_ttl_secs: ttl,
        })
    }

    fn peer(n: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    #[tokio::test]
    async fn tokens_come_from_the_right_password_only() {
        let auth = auth_with(Vec::new(), Some(("alice", "s3cret!")), 60);
        let err = auth.login(peer(1), "alice", "wrong").await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let (token, identity) = auth.login(peer(2), "alice", "s3cret!").await.unwrap();
        assert_eq!(identity.role, Role::Admin);
        auth.check(peer(2), Some(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert!(auth.check(peer(2), Some("Bearer nope")).await.is_err());
        assert!(auth.check(peer(2), None).await.is_err());
        auth.check(peer(2), Some(&basic("alice", "s3cret!")))
            .await
            .unwrap();
        assert!(basic("alice", "s3cret!").ends_with('='));
        let unpadded = basic("alice", "s3cret!").trim_end_matches('=').to_owned();
        auth.check(peer(2), Some(&unpadded)).await.unwrap();
        assert!(
            auth.check(peer(3), Some(&basic("alice", "x")))
                .await
                .is_err()
        );
        assert!(auth.check(peer(4), Some("Basic !!!")).await.is_err());
        // Basic calls are checked, not given tokens.
        assert_eq!(auth.live_tokens(), 1);
    }

    #[tokio::test]
    async fn hashed_users_have_their_roles() {
        let users = vec![
            User {
                name: "ann".into(),
                password_hash: hash_password("pw-ann").unwrap(),
                role: Role::Read,
            },
            User {
                name: "wes".into(),
                password_hash: hash_password("pw-wes").unwrap(),
                role: Role::Write,
            },
        ];
        let auth = auth_with(users, None, 60);
        let ann = auth
            .check(peer(1), Some(&basic("ann", "pw-ann")))
            .await
            .unwrap();
        assert_eq!(ann.role, Role::Read);
        assert!(ann.require(Role::Write, "bulk ingest").is_err());
        let (_, wes) = auth.login(peer(1), "wes", "pw-wes").await.unwrap();
        assert_eq!(wes.role, Role::Write);
        wes.require(Role::Write, "bulk ingest").unwrap();
        let err = wes.require(Role::Admin, "REFRESH INDEX").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(auth.login(peer(5), "ann", "pw-wes").await.is_err());
    }

    #[tokio::test]
    async fn failed_logins_are_counted_and_slowed_per_peer() {
        let auth = Arc::new(auth_with(Vec::new(), Some(("a", "b")), 60));
        // Each failure holds the next attempt back twice as long.
        let started = Instant::now();
        for _ in 0..5 {
            assert!(auth.login(peer(9), "a", "guess").await.is_err());
        }
        let slowed = started.elapsed();
        // Waits before attempts 2..5: 50 + 100 + 200 + 400 ms.
        assert!(slowed >= Duration::from_millis(750), "{slowed:?}");
        assert_eq!(auth.failed_logins(), 5);
        // Many attempts at once: a few wait, the rest are refused unchecked.
        let attempts: Vec<_> = (0..20)
            .map(|_| {
                let auth = Arc::clone(&auth);
                tokio::spawn(async move { auth.login(peer(9), "a", "guess").await })
            })
            .collect();
        let mut refused_unchecked = 0;
        for attempt in attempts {
            let err = attempt.await.unwrap().unwrap_err();
            if err.message().contains("try again later") {
                refused_unchecked += 1;
            }
        }
        assert!(
            refused_unchecked >= 20 - MAX_WAITING as usize,
            "{refused_unchecked}"
        );
        // Another address is not slowed; the right password after a wait works.
        let t = Instant::now();
        auth.login(peer(10), "a", "b").await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(500));
        let auth = auth_with(Vec::new(), Some(("a", "b")), 60);
        assert!(auth.login(peer(11), "a", "typo").await.is_err());
        auth.login(peer(11), "a", "b").await.unwrap();
    }

    #[tokio::test]
    async fn tokens_expire_and_are_bounded() {
        let auth = auth_with(Vec::new(), Some(("a", "b")), 0);
        let (token, _) = auth.login(peer(1), "a", "b").await.unwrap();
        let err = auth
            .check(peer(1), Some(&format!("Bearer {token}")))
            .await
            .unwrap_err();
        assert!(
            err.message().contains("expired") || err.message().contains("invalid"),
            "{err}"
        );
        let mut auth = auth_with(Vec::new(), Some(("a", "b")), 60);
        auth.max_tokens = 100;
        for _ in 0..110 {
            auth.login(peer(1), "a", "b").await.unwrap();
        }
        assert_eq!(auth.live_tokens(), 100);
    }

    #[tokio::test]
    async fn off_lets_everything_through_as_admin() {
        let auth = auth_with(Vec::new(), None, 1);
        assert_eq!(auth.check(None, None).await.unwrap().role, Role::Admin);
        assert!(!auth.login(None, "any", "thing").await.unwrap().0.is_empty());
    }
}

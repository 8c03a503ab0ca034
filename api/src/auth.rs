//! Credentials: argon2id password hashes and HS256 access tokens.
//!
//! Hashing is deliberately slow (tens of milliseconds of CPU, 19 MiB), so it runs on
//! tokio's blocking pool, never on the async threads that serve other requests, and
//! behind a bound ([`PasswordHashing`]).

use crate::error::ApiError;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use metrics::counter;
use serde::{Deserialize, Serialize};
use shared::config::Secret;
use shared::domain::UserId;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Argon2id hashing behind a bound: at most `limit` hashes run at once, each on tokio's
/// blocking pool. Each costs 19 MiB and tens of milliseconds of CPU, so without the
/// bound a burst of registrations takes as much memory and CPU as it likes (48 at once
/// reached ≈ 700 MB). A request that finds every permit taken is answered `503` with
/// `Retry-After` at once: queueing it would only let the queue grow.
#[derive(Debug)]
pub struct PasswordHashing {
    permits: Arc<Semaphore>,
    limit: usize,
    /// The most hashes seen running at once (tests assert it against the bound).
    peak: AtomicUsize,
}

/// Seconds a client is told to wait when every hashing permit is taken.
pub const HASHING_BUSY_RETRY_AFTER_SECS: u64 = 1;

impl PasswordHashing {
    /// At most `limit` (1 to `Semaphore::MAX_PERMITS`) hashes at once.
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            peak: AtomicUsize::new(0),
        }
    }

    /// The most hashes that ran at once so far.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place to hash in, or `503` at once when every one is taken. Taken before any
    /// other work of the request (the throttles included), so a request refused as busy
    /// has changed nothing: it leaves no throttle key and no count behind.
    pub fn slot(&self) -> Result<HashingSlot, ApiError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            counter!("password_hashes_refused_total").increment(1);
            ApiError::Busy {
                retry_after_secs: HASHING_BUSY_RETRY_AFTER_SECS,
            }
        })?;
        let running = self.limit - self.permits.available_permits();
        self.peak.fetch_max(running, Ordering::Relaxed);
        Ok(HashingSlot { permit })
    }
}

/// One of [`PasswordHashing`]'s places, held until its one hash is done.
#[derive(Debug)]
pub struct HashingSlot {
    permit: OwnedSemaphorePermit,
}

impl HashingSlot {
    /// Hashes a password (PHC string with a random salt).
    pub async fn hash(self, password: String) -> Result<String, ApiError> {
        self.run("hashing a password", move || {
            Argon2::default()
                .hash_password(password.as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|err| ApiError::internal("hashing a password", anyhow::anyhow!("{err}")))
        })
        .await?
    }

    /// Whether `password` matches the stored PHC hash. A malformed stored hash counts
    /// as a mismatch (and is logged), never as a match.
    pub async fn verify(self, password: String, stored: String) -> Result<bool, ApiError> {
        self.run("verifying a password", move || {
            match PasswordHash::new(&stored) {
                Ok(hash) => Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok(),
                Err(err) => {
                    tracing::error!(error = %err, "stored password hash is malformed");
                    false
                }
            }
        })
        .await
    }

    /// Runs `work` on the blocking pool, holding the slot until it is done.
    async fn run<T: Send + 'static>(
        self,
        step: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.permit;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|err| ApiError::internal(step, err))
    }
}

/// A stored hash to verify against when the email is unknown, so that a login for a
/// missing account takes as long as one with a wrong password.
pub fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        Argon2::default()
            .hash_password(b"not a real password")
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

/// The claims of our access tokens.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: Uuid,
    /// Expiry, seconds since the epoch.
    exp: u64,
    /// Issued at, seconds since the epoch.
    iat: u64,
}

/// Signs and checks access tokens with one HS256 key.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl_secs: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys from the configured secret; without one, a random per-process secret and a
    /// loud warning (tokens then stop working at restart and across replicas).
    pub fn new(secret: Option<&Secret>, ttl_secs: u64) -> Self {
        let secret = match secret {
            Some(secret) => secret.expose().as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "JWT_SECRET is not set: signing tokens with a random per-process secret. \
                     Tokens will not survive a restart or work across replicas. Set JWT_SECRET in production."
                );
                let mut bytes = [0u8; 32];
                rand::fill(&mut bytes);
                bytes.to_vec()
            }
        };
        // Only HS256: `alg: none` and every other algorithm are refused. `exp` is
        // required; a few seconds of leeway absorb clock skew between replicas.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            ttl_secs,
        }
    }

    /// How long an issued token lives.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// A token for `user`, valid for the configured lifetime.
    pub fn issue(&self, user: UserId) -> Result<String, ApiError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            sub: user.0,
            exp: now + self.ttl_secs,
            iat: now,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| ApiError::internal("signing an access token", err))
    }

    /// The user a token speaks for, or `NotAuthenticated` for anything else.
    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| UserId(data.claims.sub))
            .map_err(|_| ApiError::NotAuthenticated)
    }
}

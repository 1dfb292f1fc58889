//! Passwords and login tokens.
//!
//! Passwords are stored only as argon2id hashes and checked in constant time (by the argon2
//! crate). Hashing is deliberately slow (tens of milliseconds) and large (19 MiB), so it runs
//! on a few threads of its own ([`PasswordHashers`]), never on the async worker threads.
//!
//! A login token is 256 random bits from the operating system, sent to the client as 64 hex
//! digits; the store keeps only its BLAKE2b-256 hash and an expiry. A token is looked up by
//! its hash, so no secret is ever compared byte by byte: the lookup's timing can only reveal
//! something about the hash, which says nothing usable about the token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use blake2::Digest;

use crate::id::UserId;
use crate::store::{Store, StoreError, TokenHash};
use crate::workers::Workers;

/// Hashing failed; only a bug (bad parameters) or a panic in a hashing thread causes this.
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// A few threads of their own for argon2, which needs 19 MiB of memory per hash (see
/// [`Workers`] for why not tokio's blocking pool): at most `--password-hashers` hashes run at
/// once, and further registrations and logins wait their turn.
#[derive(Clone)]
pub struct PasswordHashers {
    workers: Workers<()>,
}

impl PasswordHashers {
    /// Starts `threads` hashing threads (none is an error).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let workers = Workers::new("argon2", vec![(); threads])?;
        Ok(PasswordHashers { workers })
    }

    /// Hashes `password` with argon2id (the crate's defaults: 19 MiB, 2 passes) and a random
    /// salt; returns a PHC string that carries the parameters and the salt.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let queued = std::time::Instant::now();
        self.workers
            .run(move |()| {
                crate::metrics::hash_wait(queued.elapsed());
                let salt = SaltString::generate(&mut OsRng);
                let hash = Argon2::default()
                    .hash_password(password.as_bytes(), &salt)
                    .map(|h| h.to_string())
                    .map_err(|e| HashError(e.to_string()));
                release_hash_memory();
                hash
            })
            .await
            .map_err(|e| HashError(e.to_string()))?
    }

    /// True when `password` matches the stored `hash`. A malformed hash matches nothing.
    pub async fn verify(&self, password: String, hash: String) -> bool {
        let queued = std::time::Instant::now();
        self.workers
            .run(move |()| {
                crate::metrics::hash_wait(queued.elapsed());
                let matches = PasswordHash::new(&hash).is_ok_and(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                });
                release_hash_memory();
                matches
            })
            .await
            .unwrap_or(false)
    }
}

/// Gives the 19 MiB that a hash used back to the operating system now. The server's
/// allocator, mimalloc (see `main.rs`), keeps freed memory for reuse until a later
/// allocation on the same thread: each hashing thread, idle between logins, would hold its
/// last hash's memory for good.
fn release_hash_memory() {
    // SAFETY: mi_collect takes no pointers; it only returns this thread's unused memory (and
    // the shared arenas' unused memory) to the OS, and may be called on any thread. Without
    // mimalloc as the global allocator (tests), it has nothing to do.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// A freshly issued login token: the secret, which only the client keeps, and its expiry.
#[derive(Debug)]
pub struct IssuedToken {
    pub secret: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// The hash under which a token is stored.
pub fn hash_token(secret: &str) -> TokenHash {
    blake2::Blake2b::<blake2::digest::consts::U32>::digest(secret.as_bytes()).into()
}

/// `bytes` as lowercase hex digits.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates a token for `user`, valid for `ttl`, and stores its hash; `None` when the
/// account is disabled.
pub async fn issue_token(
    store: &dyn Store,
    user: UserId,
    ttl: Duration,
) -> Result<Option<IssuedToken>, StoreError> {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let secret = hex(&bytes);
    let expires_at = now().saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let stored = store
        .create_token(hash_token(&secret), user, expires_at)
        .await?;
    Ok(stored.then_some(IssuedToken { secret, expires_at }))
}

/// The user a token belongs to, if it is known and has not expired.
pub async fn check_token(store: &dyn Store, secret: &str) -> Result<Option<UserId>, StoreError> {
    Ok(store
        .token(hash_token(secret))
        .await?
        .filter(|t| t.expires_at > now())
        .map(|t| t.user))
}

/// Revokes a token; false when it was unknown or had expired (nothing to revoke).
pub async fn revoke_token(store: &dyn Store, secret: &str) -> Result<bool, StoreError> {
    if check_token(store, secret).await?.is_none() {
        return Ok(false);
    }
    store.revoke_token(hash_token(secret)).await
}

/// Unix seconds.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

//! The users that valid tokens have lately been found to speak for.
//!
//! A token stays valid for its whole lifetime even if its user is deleted, so each
//! request's `sub` must be checked against `users`; one more query per request would
//! cost the polling path a round trip. This cache answers instead, for a short time
//! after a user was last seen to exist. A deletion is announced on channel
//! `user_deleted` (a trigger, in the migrations), and the api's listener
//! ([`crate::long_poll::listen`]) forgets that user at once; when the listener loses its
//! connection, the whole cache is forgotten, since a notification may have been missed.
//! [`FRESH_FOR`] bounds how stale an entry can be even then.

use crate::error::{ApiError, Context};
use shared::db::users;
use shared::domain::UserId;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a user found to exist is believed to: the longest a deleted user's token
/// can still work if the deletion's notification was lost.
pub const FRESH_FOR: Duration = Duration::from_secs(60);

/// Entries kept at most (about 40 bytes each): past it the cache starts afresh, which
/// costs one query per active user, never memory without a bound.
const MAX_ENTRIES: usize = 100_000;

/// Users found to exist, and when.
#[derive(Debug, Default)]
pub struct KnownUsers {
    seen: Mutex<HashMap<UserId, Instant>>,
}

impl KnownUsers {
    /// `Ok` when `user` exists; `401 NOT_AUTHENTICATED` when it does not.
    pub async fn check(&self, pool: &PgPool, user: UserId) -> Result<(), ApiError> {
        if self.is_fresh(user) {
            return Ok(());
        }
        let mut conn = pool.acquire().await.context("acquiring a connection")?;
        if !users::exists(&mut conn, user)
            .await
            .context("checking the token's user exists")?
        {
            return Err(ApiError::NotAuthenticated);
        }
        self.remember(user);
        Ok(())
    }

    fn is_fresh(&self, user: UserId) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&user).is_some_and(|at| at.elapsed() < FRESH_FOR)
    }

    fn remember(&self, user: UserId) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_ENTRIES {
            seen.clear();
        }
        seen.insert(user, Instant::now());
    }

    /// Forgets a deleted user.
    pub fn forget(&self, user: UserId) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&user);
    }

    /// Forgets everyone: a deletion may have gone unheard.
    pub fn forget_all(&self) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

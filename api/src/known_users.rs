//! The users that valid tokens have lately been found to speak for.
//!
//! A token stays valid for its whole lifetime even if its user is deleted, so each
//! request's `sub` must be checked against `users`; one more query per request would
//! cost the polling path a round trip. This cache answers instead, for a short time
//! after a user was last seen to exist. A deletion is announced on channel
//! `user_deleted` (a trigger, in the migrations), and the api's listener
//! ([`crate::long_poll::listen`]) forgets that user at once; when the listener loses its
//! connection, the whole cache is forgotten, since a notification may have been missed.
//! A query that ran while anyone was forgotten is not cached: its answer may predate
//! the deletion that forget was for.
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
    seen: Mutex<Seen>,
}

/// What [`KnownUsers`] keeps under its one lock, so that a forget and the check of it in
/// [`KnownUsers::remember`] cannot interleave.
#[derive(Debug, Default)]
struct Seen {
    /// When each user was last found to exist.
    at: HashMap<UserId, Instant>,
    /// How many forgets (of one user or of all) there have been: a query's answer may
    /// be cached only if none happened while it ran, since the forget may have been for
    /// the very deletion the query did not see.
    forgets: u64,
}

/// The count of forgets when a user's query began (see [`Seen::forgets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticket(u64);

impl KnownUsers {
    /// `Ok` when `user` exists; `401 NOT_AUTHENTICATED` when it does not.
    pub async fn check(&self, pool: &PgPool, user: UserId) -> Result<(), ApiError> {
        if self.is_fresh(user) {
            return Ok(());
        }
        // Taken before the query: a deletion the query misses is notified after it
        // commits, so its forget lands after this ticket, and the answer is not cached.
        let ticket = self.ticket();
        let mut conn = pool.acquire().await.context("acquiring a connection")?;
        if !users::exists(&mut conn, user)
            .await
            .context("checking the token's user exists")?
        {
            return Err(ApiError::NotAuthenticated);
        }
        self.remember(user, ticket);
        Ok(())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_fresh(&self, user: UserId) -> bool {
        self.seen()
            .at
            .get(&user)
            .is_some_and(|at| at.elapsed() < FRESH_FOR)
    }

    fn ticket(&self) -> Ticket {
        Ticket(self.seen().forgets)
    }

    /// Caches that `user` exists, unless anyone was forgotten since `ticket` was taken:
    /// conservative (any forget, of anyone, costs the next request of this user one
    /// query), and never wrong.
    fn remember(&self, user: UserId, ticket: Ticket) {
        let mut seen = self.seen();
        if Ticket(seen.forgets) != ticket {
            return;
        }
        if seen.at.len() >= MAX_ENTRIES {
            seen.at.clear();
        }
        seen.at.insert(user, Instant::now());
    }

    /// Forgets a deleted user.
    pub fn forget(&self, user: UserId) {
        let mut seen = self.seen();
        seen.forgets += 1;
        seen.at.remove(&user);
    }

    /// Forgets everyone: a deletion may have gone unheard.
    pub fn forget_all(&self) {
        let mut seen = self.seen();
        seen.forgets += 1;
        seen.at.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_found_to_exist_is_remembered() {
        let users = KnownUsers::default();
        let alice = UserId::new();
        let ticket = users.ticket();
        users.remember(alice, ticket);
        assert!(users.is_fresh(alice));
    }

    #[test]
    fn a_deletion_heard_while_the_query_ran_is_not_undone_by_its_answer() {
        let users = KnownUsers::default();
        let alice = UserId::new();
        let ticket = users.ticket();
        // The query saw Alice; her deletion committed and was heard before the answer
        // was cached.
        users.forget(alice);
        users.remember(alice, ticket);
        assert!(!users.is_fresh(alice));
    }

    #[test]
    fn any_forget_while_the_query_ran_skips_caching_its_answer() {
        let users = KnownUsers::default();
        let (alice, bob) = (UserId::new(), UserId::new());
        let ticket = users.ticket();
        users.forget(bob);
        users.remember(alice, ticket);
        assert!(!users.is_fresh(alice));

        let ticket = users.ticket();
        users.forget_all();
        users.remember(alice, ticket);
        assert!(!users.is_fresh(alice));

        // A query begun after the forgets is cached again.
        let ticket = users.ticket();
        users.remember(alice, ticket);
        assert!(users.is_fresh(alice));
    }
}

//! Login throttling: how long to refuse after repeated failures.
//!
//! Attempts are counted in three buckets (in the store, so every replica
//! sees them), each with its own free allowance before waits start; then
//! each further failure doubles the wait, up to [`MAX_LOCK`]:
//!
//! - **account × address** ([`FREE_FAILURES`]): one address guessing one
//!   account's password. Typos are free; a guesser slows down fast. This is
//!   the bucket that usually locks, and it locks only that address out of
//!   that account: the owner elsewhere is not affected.
//! - **account** ([`FREE_FAILURES_PER_ACCOUNT`]): guesses at one account from
//!   many addresses. Far higher, so that locking someone out of their own
//!   account takes a distributed effort, not five requests.
//! - **address** ([`FREE_FAILURES_PER_ADDRESS`]): one address guessing many
//!   accounts (password spraying). A success does not reset it: logging in
//!   to one's own account gives back only that attempt.
//!
//! A success clears the account × address and account buckets.

use std::time::Duration;

/// Failures of one account from one address before any wait.
pub const FREE_FAILURES: i64 = 5;
/// Failures of one account, from all addresses together, before any wait.
pub const FREE_FAILURES_PER_ACCOUNT: i64 = 100;
/// Longest wait between attempts.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures from one address, over all accounts, before any wait: more
/// room, since many people may share one NAT.
pub const FREE_FAILURES_PER_ADDRESS: i64 = 50;

/// How long to lock after the `failures`-th consecutive failure.
pub fn lock_for(failures: i64, free: i64) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let exp = u32::try_from(failures - free).unwrap_or(u32::MAX).min(10);
    Duration::from_secs(1u64 << exp).min(MAX_LOCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        assert_eq!(lock_for(4, FREE_FAILURES), Duration::ZERO);
        assert_eq!(lock_for(5, FREE_FAILURES), Duration::from_secs(1));
        assert_eq!(lock_for(8, FREE_FAILURES), Duration::from_secs(8));
        assert_eq!(lock_for(20, FREE_FAILURES), Duration::from_secs(1024).min(MAX_LOCK));
        assert_eq!(lock_for(1000, FREE_FAILURES), MAX_LOCK);
    }
}

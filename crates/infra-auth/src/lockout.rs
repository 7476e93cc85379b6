//! Login throttling: how long to refuse after repeated failures.
//!
//! Failures are counted per account and per source address (in the store,
//! so every replica sees them). The first few are free, for typos; then each
//! further failure doubles the wait, up to a cap. A success clears the
//! account's count.

use std::time::Duration;

/// Failures allowed before any wait.
pub const FREE_FAILURES: i64 = 5;
/// Longest wait between attempts.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// A source address gets more room: many people may share one NAT.
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

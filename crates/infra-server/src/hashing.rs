//! Password hashing off the request path, bounded.

use crate::error::ApiError;
use crate::state::AppState;

/// Runs a password hash or check (argon2, ~19 MiB and tens of ms each) on
/// the blocking pool, at most one per core at a time: a flood of logins
/// queues instead of taking all memory.
pub(crate) async fn argon<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let _permit = state.hashing.acquire().await.map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)
}

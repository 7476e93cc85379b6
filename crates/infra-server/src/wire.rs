//! The API's wire forms of times, durations and pages.

use axum::Json;
use infra_api::{DEFAULT_LIMIT, MAX_LIMIT};

use crate::error::ApiError;

/// Page and limit with defaults and bounds.
pub(crate) fn paging(page: Option<u32>, limit: Option<u32>) -> Result<(u32, u32), ApiError> {
    let page = page.unwrap_or(1);
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if page == 0 {
        return Err(ApiError::bad_request("page starts at 1"));
    }
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    Ok((page, limit))
}

pub(crate) fn page_of<T>(items: Vec<T>, page: u32, limit: u32, total: u64) -> Json<infra_api::Page<T>> {
    Json(infra_api::Page {
        items,
        page,
        limit,
        total_count: total,
    })
}

/// RFC 3339 time from unix milliseconds.
pub(crate) fn time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Milliseconds of a duration, as times are stored.
pub(crate) fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

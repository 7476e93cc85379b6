//! Which recordings to delete: those older than the age limit, then the
//! oldest until the rest fit the size limit. A recording still being
//! written is never chosen.

/// What retention needs to know of a stored recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub id: String,
    /// When the session started (unix milliseconds).
    pub started_ms: i64,
    pub bytes: u64,
    /// Still being written.
    pub open: bool,
}

/// The limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_age_ms: Option<i64>,
    pub max_total_bytes: Option<u64>,
}

/// Why a recording is deleted, for its audit event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Age,
    Size,
}

/// The recordings to delete at `now`, oldest first, each with why.
pub fn to_delete(stored: &[Stored], limits: Limits, now_ms: i64) -> Vec<(String, Why)> {
    let mut by_age: Vec<&Stored> = stored.iter().collect();
    by_age.sort_by(|a, b| (a.started_ms, &a.id).cmp(&(b.started_ms, &b.id)));
    let mut out = Vec::new();
    let mut kept: Vec<&Stored> = Vec::new();
    for s in by_age {
        let too_old = limits
            .max_age_ms
            .is_some_and(|max| now_ms.saturating_sub(s.started_ms) > max);
        if too_old && !s.open {
            out.push((s.id.clone(), Why::Age));
        } else {
            kept.push(s);
        }
    }
    if let Some(max) = limits.max_total_bytes {
        // Only what is stored counts: a session still being written (one
        // that prints without end, say) must not push every finished
        // recording out of the store.
        let mut total: u64 = kept.iter().filter(|s| !s.open).map(|s| s.bytes).sum();
        for s in kept {
            if total <= max {
                break;
            }
            if !s.open {
                total -= s.bytes;
                out.push((s.id.clone(), Why::Size));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, started_ms: i64, bytes: u64, open: bool) -> Stored {
        Stored {
            id: id.into(),
            started_ms,
            bytes,
            open,
        }
    }

    #[test]
    fn old_ones_go_then_the_oldest_until_the_rest_fit() {
        let all = [
            rec("c", 300, 50, false),
            rec("a", 100, 10, false),
            rec("b", 200, 40, false),
            rec("d", 400, 30, true),
            rec("e", 500, 20, false),
        ];
        let age = Limits {
            max_age_ms: Some(250),
            max_total_bytes: None,
        };
        assert_eq!(
            to_delete(&all, age, 500),
            [("a".into(), Why::Age), ("b".into(), Why::Age)]
        );
        let size = Limits {
            max_age_ms: None,
            max_total_bytes: Some(60),
        };
        // 150 bytes in all: a, b, c go (oldest first), d is open, e stays.
        assert_eq!(
            to_delete(&all, size, 500),
            [
                ("a".into(), Why::Size),
                ("b".into(), Why::Size),
                ("c".into(), Why::Size)
            ]
        );
        assert!(to_delete(&all, Limits::default(), 500).is_empty());
    }

    #[test]
    fn a_recording_being_written_is_never_deleted() {
        let all = [rec("live", 0, 1_000, true)];
        let l = Limits {
            max_age_ms: Some(1),
            max_total_bytes: Some(1),
        };
        assert!(to_delete(&all, l, 1_000_000).is_empty());
    }

    #[test]
    fn a_huge_running_session_pushes_nothing_out() {
        let all = [rec("old", 0, 10, false), rec("live", 1, 1_000_000, true)];
        let l = Limits {
            max_age_ms: None,
            max_total_bytes: Some(100),
        };
        assert!(to_delete(&all, l, 2).is_empty());
        // And a start time from the far future does not overflow.
        let l = Limits {
            max_age_ms: Some(10),
            max_total_bytes: None,
        };
        assert!(to_delete(&[rec("x", i64::MIN, 1, false)], l, i64::MAX).len() == 1);
    }
}

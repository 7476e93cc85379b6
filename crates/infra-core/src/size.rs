//! Sizes as people write them in configuration: `500MB`, `2GiB`, `4096`.

/// Why a size was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("'{0}' is not a size such as 100MB")]
    NotASize(String),
    #[error("unknown unit '{0}' (use KB, MB, GB, KiB, MiB or GiB)")]
    Unit(String),
    #[error("'{0}' is out of range")]
    Range(String),
}

/// Bytes, or a number with KB, MB or GB (powers of 1000) or KiB, MiB, GiB
/// (powers of 1024). Zero is refused: every size configured is a limit.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| SizeError::NotASize(s.to_owned()))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        other => return Err(SizeError::Unit(other.to_owned())),
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| SizeError::Range(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size(" 2 GiB "), Ok(2 << 30));
        assert_eq!(parse_size("1kib"), Ok(1024));
        assert!(matches!(parse_size("0"), Err(SizeError::Range(_))));
        assert!(matches!(parse_size("MB"), Err(SizeError::NotASize(_))));
        assert!(matches!(parse_size("3 TB"), Err(SizeError::Unit(_))));
        assert!(matches!(parse_size("99999999999GiB"), Err(SizeError::Range(_))));
    }
}

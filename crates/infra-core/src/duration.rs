//! Durations as people write them: `90s`, `5m`, `1h30m`, `7d`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration '{0}': use a number with a unit, such as 30s, 5m, 12h, 7d or 1h30m")]
pub struct DurationError(String);

/// Parses `1h30m`-style durations. Units: s, m, h, d, w. Zero is refused:
/// a credential that expires at once is never what anyone meant.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let fail = || DurationError(s.chars().take(32).collect());
    let s_trim = s.trim();
    if s_trim.is_empty() {
        return Err(fail());
    }
    let mut total: u64 = 0;
    let mut num: Option<u64> = None;
    for c in s_trim.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = num
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(d)));
            num = Some(n.ok_or_else(fail)?);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(fail()),
        };
        let n = num.take().ok_or_else(fail)?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(fail)?;
    }
    // A trailing number without a unit is ambiguous.
    if num.is_some() || total == 0 || total > 100 * 365 * 86_400 {
        return Err(fail());
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration back in the same style, largest units first.
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= secs {
            out.push_str(&format!("{}{unit}", s / secs));
            s %= secs;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<u64>) {
        assert_eq!(parse_duration(input).ok().map(|d| d.as_secs()), expected, "{input}");
    }

    #[test]
    fn parses() {
        check("30s", Some(30));
        check("5m", Some(300));
        check("1h30m", Some(5400));
        check("7d", Some(604_800));
        check("2w", Some(1_209_600));
        check("", None);
        check("5", None);
        check("m", None);
        check("0s", None);
        check("5x", None);
        check("-5m", None);
        check("99999999999999999999s", None);
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400 + 1)), "1d1s");
    }
}

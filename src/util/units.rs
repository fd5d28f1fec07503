//! Durations and byte sizes as compose, Docker and Dockerfiles write them: one grammar each.

/// A value that is not a duration or byte size; the message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not of the grammar.
    #[error("invalid duration `{0}` (expected e.g. `1m30s`, `500ms`)")]
    Duration(String),
    /// A duration with a minus sign.
    #[error("negative duration `{0}`")]
    NegativeDuration(String),
    /// More than `u64` nanoseconds (584 years).
    #[error("duration `{0}` is too long")]
    DurationTooLong(String),
    /// Not of the grammar.
    #[error("invalid byte size `{0}` (expected e.g. `512m`, `1g`, `1024`)")]
    ByteSize(String),
    /// More than `i64` bytes.
    #[error("byte size `{0}` is too large")]
    ByteSizeTooLarge(String),
    /// A negative size where only sizes are meant (not compose's `-1` for "unlimited").
    #[error("invalid size `{0}` (must not be negative)")]
    NegativeByteSize(String),
}

/// Parses a duration in Go's form plus days and weeks, as compose does: `1h2m3.5s`, `500ms`,
/// `10us`, `1µs`, `3ns`, `2d`, `1w`, and a bare `0`; returns nanoseconds. Fractions are exact
/// to the nanosecond (integer arithmetic, no float rounding).
///
/// # Errors
/// The value is not a duration, is negative, or is longer than `u64` nanoseconds.
pub fn parse_duration_nanos(s: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Duration(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if t == "0" {
        return Ok(0);
    }
    let mut rest = t.strip_prefix('+').unwrap_or(t);
    if rest.starts_with('-') {
        return Err(UnitError::NegativeDuration(s.to_string()));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let (num, tail) = rest.split_at(num_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            _ => return Err(bad()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(bad());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| bad())?
        };
        total = total.saturating_add(int.saturating_mul(scale));
        if !frac.is_empty() {
            let mut f: u128 = 0;
            let mut div: u128 = 1;
            for c in frac.chars().take(18) {
                f = f * 10 + u128::from(c.to_digit(10).ok_or_else(bad)?);
                div *= 10;
            }
            total = total.saturating_add(f * scale / div);
        }
        rest = tail;
    }
    u64::try_from(total).map_err(|_| UnitError::DurationTooLong(s.to_string()))
}

/// A duration as Docker's command line and Dockerfile flags take it: the grammar of
/// [`parse_duration_nanos`], or a bare non-negative number, which counts seconds (`10`,
/// `1.5`), as the number form of compose's schema does.
///
/// # Errors
/// As [`parse_duration_nanos`].
pub fn parse_duration(s: &str) -> Result<std::time::Duration, UnitError> {
    let t = s.trim();
    if let Ok(n) = t.parse::<f64>()
        && n >= 0.0
        && n.is_finite()
    {
        return std::time::Duration::try_from_secs_f64(n)
            .map_err(|_| UnitError::DurationTooLong(s.to_string()));
    }
    parse_duration_nanos(s).map(std::time::Duration::from_nanos)
}

/// Parses a byte size in binary units, case-insensitive: `1024`, `64m`, `1.5g`, `10kb`,
/// `2GiB`, up to `p`. A bare integer may be negative (compose's `memswap_limit: -1`).
///
/// # Errors
/// The value is not a byte size or is larger than `i64`.
pub fn parse_byte_size(s: &str) -> Result<i64, UnitError> {
    let bad = || UnitError::ByteSize(s.to_string());
    let t = s.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(v);
    }
    let lower = t.to_ascii_lowercase();
    let num_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ' '))
        .ok_or_else(bad)?;
    let (num, unit) = lower.split_at(num_end);
    let num: f64 = num.trim().parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim() {
        "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "p" | "pb" | "pib" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = num * mult;
    if !v.is_finite() || v > 9.2e18 {
        return Err(UnitError::ByteSizeTooLarge(s.to_string()));
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok(v as i64)
}

/// A size that must not be negative (Docker's `--memory`, `--shm-size`, …): the grammar of
/// [`parse_byte_size`].
///
/// # Errors
/// As [`parse_byte_size`], or a negative size.
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    u64::try_from(parse_byte_size(s)?).map_err(|_| UnitError::NegativeByteSize(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn units_durations() {
        for (s, ns) in [
            ("1m30s", 90_000_000_000),
            ("1500ms", 1_500_000_000),
            ("0.5s", 500_000_000),
            ("10us", 10_000),
            ("1µs", 1_000),
            ("3ns", 3),
            ("0", 0),
            ("1d", 86_400_000_000_000),
            ("1.25ms", 1_250_000),
            ("+2s", 2_000_000_000),
        ] {
            assert_eq!(parse_duration_nanos(s), Ok(ns), "{s}");
        }
        for bad in ["", "1x", "s", "1m30", "abc", ".s", "2"] {
            assert!(parse_duration_nanos(bad).is_err(), "{bad} should fail");
        }
        assert_eq!(
            parse_duration_nanos("-1s"),
            Err(UnitError::NegativeDuration("-1s".into()))
        );
        assert!(matches!(
            parse_duration_nanos("999999999h"),
            Err(UnitError::DurationTooLong(_))
        ));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-3").is_err());
    }

    #[test]
    fn units_byte_sizes() {
        for (s, n) in [
            ("64m", 67_108_864),
            ("1g", 1_073_741_824),
            ("50M", 52_428_800),
            ("1.5k", 1536),
            ("-1", -1),
            ("100", 100),
            ("64MiB", 64 << 20),
            ("2 kb", 2048),
            ("7b", 7),
        ] {
            assert_eq!(parse_byte_size(s), Ok(n), "{s}");
        }
        assert!(parse_byte_size("12q").is_err());
        assert!(parse_byte_size("lots").is_err());
        assert_eq!(
            parse_byte_size("9999999999999p"),
            Err(UnitError::ByteSizeTooLarge("9999999999999p".into()))
        );
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(
            parse_bytes("-1"),
            Err(UnitError::NegativeByteSize("-1".into()))
        );
    }
}

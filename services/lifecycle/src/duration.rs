//! Duration flags: `humantime` for every one of them (`500ms`, `30s`, `5m`, `1h 30m`, `2days`).
//!
//! A bare number is refused (`30` could be seconds or milliseconds): say the unit.
//!
//! ```
//! use std::time::Duration;
//! assert_eq!(lifecycle::duration::positive("1m 30s"), Ok(Duration::from_secs(90)));
//! assert!(lifecycle::duration::positive("0s").is_err());
//! assert!(lifecycle::duration::positive("30").is_err());
//! assert_eq!(lifecycle::duration::non_negative("0s"), Ok(Duration::ZERO));
//! ```

use std::time::Duration;

/// A duration of more than zero, for clap's `value_parser`.
///
/// # Errors
/// The text is not a `humantime` duration, or it is zero.
pub fn positive(text: &str) -> Result<Duration, String> {
    match non_negative(text)? {
        d if d.is_zero() => Err(format!("{text:?}: must be more than zero")),
        d => Ok(d),
    }
}

/// A duration that may be zero (zero usually turns something off), for clap's `value_parser`.
///
/// # Errors
/// The text is not a `humantime` duration.
pub fn non_negative(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write it with a unit: 500ms, 30s, 5m, 1h")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_required_and_zero_only_where_allowed() {
        assert_eq!(positive("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(positive(" 30s "), Ok(Duration::from_secs(30)));
        assert_eq!(positive("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(positive("1h"), Ok(Duration::from_secs(3600)));
        assert!(positive("2").unwrap_err().contains("with a unit"));
        assert!(positive("0s").unwrap_err().contains("more than zero"));
        assert!(positive("5 lightyears").is_err());
        assert_eq!(non_negative("0s"), Ok(Duration::ZERO));
    }
}

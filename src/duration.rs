//! Durations as the flags write them: `500ms`, `5s`, `1m30s`, `1.5s`, `0`.

use std::time::Duration;

/// The longest duration any flag accepts; anything longer is surely a typo.
const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses a duration such as `500ms`, `5s`, `1m30s`, `2h` or `0`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration (write it like 500ms, 5s or 1m30s)".into());
    }
    let mut total_ns: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if number.is_empty() {
            return Err(format!(
                "'{text}' is not a duration (write it like 500ms, 5s or 1m30s)"
            ));
        }
        let unit_ns: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("'{text}' has no unit (write it like 5s or 500ms)")),
            other => {
                return Err(format!(
                    "'{other}' in '{text}' is not a unit (use ms, s, m or h)"
                ));
            }
        };
        total_ns = total_ns
            .checked_add(
                scaled(number, unit_ns).ok_or_else(|| format!("'{text}' is not a duration"))?,
            )
            .ok_or_else(|| format!("'{text}' is too long"))?;
        rest = after;
    }
    let total =
        Duration::from_nanos(u64::try_from(total_ns).map_err(|_| format!("'{text}' is too long"))?);
    if total > MAX {
        return Err(format!("'{text}' is longer than the maximum of 168h"));
    }
    Ok(total)
}

/// `number` (digits with at most one decimal point) times `unit_ns`, in nanoseconds.
fn scaled(number: &str, unit_ns: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    // Beyond nanosecond precision the digits cannot matter; cap them so the maths cannot overflow.
    let fraction = &fraction[..fraction.len().min(18)];
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(unit_ns)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let scale = 10u128.pow(u32::try_from(fraction.len()).ok()?);
        value = value.checked_add(digits.checked_mul(unit_ns)? / scale)?;
    }
    Some(value)
}

/// Writes a duration the way it is parsed: `1m30s`, `500ms`, `0s`.
pub fn format(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let (h, m, s, rest_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    if rest_ms > 0 {
        out.push_str(&format!("{rest_ms}ms"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("0", 0),
            ("0s", 0),
            ("500ms", 500),
            ("5s", 5000),
            ("1m30s", 90_000),
            ("1.5s", 1500),
            ("2h", 7_200_000),
            (".5s", 500),
            ("1h1m1s1ms", 3_661_001),
        ];
        for (text, ms) in cases {
            assert_eq!(parse(text), Ok(Duration::from_millis(ms)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        for text in [
            "",
            "5",
            "abc",
            "5x",
            "s",
            "1..5s",
            ".s",
            "-5s",
            "999999999999999999999h",
            "169h",
        ] {
            assert!(parse(text).is_err(), "{text} should fail");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,40}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_duration_shaped_text(text in "[0-9.]{0,25}(ms|s|m|h|x|)([0-9.]{0,25}(ms|s|m|h|))?") {
            if let Ok(parsed) = parse(&text) {
                proptest::prop_assert!(parsed <= MAX);
            }
        }

        #[test]
        fn every_formatted_duration_parses_back(ms in 0u64..MAX.as_millis() as u64) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [0u64, 1, 500, 5000, 90_000, 3_661_001] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}

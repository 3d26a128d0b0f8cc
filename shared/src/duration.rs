//! Layer 0: durations as the tools read and print them — one parser for every argument and
//! knob, and the formats of the log lines.

use std::time::Duration;

/// A duration: a number of seconds (`1500`, `2.5`), or a number with a unit `ms`, `s`, `m`
/// or `h` (`100ms`, `30s`, `25m`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.starts_with('-') {
        return Err("must not be negative".into());
    }
    let well_formed = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    if !well_formed {
        return Err("expected a number of seconds, e.g. 30, 2.5 or 500ms".into());
    }
    let scale = match unit {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit '{unit}' (use ms, s, m or h)")),
    };
    let value: f64 = number
        .parse::<f64>()
        .map_err(|_| "expected a number of seconds, e.g. 30, 2.5 or 500ms".to_string())?
        * scale;
    // A year is plenty, and keeps every sum of instants far from overflowing.
    if !(0.0..=365.0 * 86400.0).contains(&value) {
        return Err("too large (at most a year)".into());
    }
    Ok(Duration::from_millis((value * 1000.0).round() as u64))
}

/// A duration the way the log lines print a setting: `1500s`, `2.5s`, `0.25s`.
pub fn seconds(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        let text = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", text.trim_end_matches('0'))
    }
}

/// A duration as an option's default shows it (`--help`, `[default: 300s]`) and the parser
/// reads it back: whole seconds as `300s`, shorter ones as `100ms`, others as `2.5s`.
pub fn text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 && ms > 0 {
        format!("{ms}ms")
    } else {
        seconds(d)
    }
}

/// A budget in an error message, to a tenth of a second: an attempt cut to the time left gets
/// 2.9996 s, and `no answer within 3s` is what the reader needs.
pub fn about_seconds(d: Duration) -> String {
    let tenths = (d.as_millis() + 50) / 100;
    seconds(Duration::from_millis(
        u64::try_from(tenths * 100).unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("1500"), Ok(Duration::from_secs(1500)));
        assert_eq!(parse("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        for bad in ["", "-5", "abc", "1.2.3", "5x", ".", "1e3", " 5", "5 "] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse("-1").unwrap_err(), "must not be negative");
    }

    #[test]
    fn default_texts_read_back_as_the_same_duration() {
        for (ms, shown) in [
            (100, "100ms"),
            (400, "400ms"),
            (2000, "2s"),
            (2500, "2.5s"),
            (1_500_000, "1500s"),
            (0, "0s"),
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(text(d), shown);
            assert_eq!(parse(shown), Ok(d));
        }
    }

    #[test]
    fn seconds_format() {
        assert_eq!(seconds(Duration::from_secs(1500)), "1500s");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5s");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25s");
        assert_eq!(seconds(Duration::ZERO), "0s");
        assert_eq!(about_seconds(Duration::from_micros(2_999_600)), "3s");
        assert_eq!(about_seconds(Duration::from_millis(2_440)), "2.4s");
    }
}

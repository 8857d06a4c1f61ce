//! Check 4 of a stored run record (see `crate::record_checks`): each optional field,
//! when present and not null, has its documented shape (metrics and series, timestamps,
//! duration, error, provenance, artifacts, derived errors).

use serde_json::{Map, Value};

use crate::encoding::quote_str;
use crate::record_checks::{count, got, Kind};
use crate::record_fields::Fields;

fn shape(
    what: &str,
    value: &Value,
    fields: &[(&str, Kind, bool)],
    nullable: bool,
) -> Result<(), String> {
    let Some(map) = value.as_object() else {
        let kind = if nullable {
            "an object or null"
        } else {
            "an object"
        };
        return Err(format!("{what} must be {kind}, got {}", got(value)));
    };
    for (name, kind, needed) in fields {
        match map.get(*name) {
            None if *needed => return Err(format!("{what} lacks key {}", quote_str(name))),
            None => {}
            Some(v) if !kind.accepts(v) => {
                return Err(format!(
                    "{what}[{}] must be {}, got {}",
                    quote_str(name),
                    kind.name(),
                    got(v)
                ))
            }
            Some(_) => {}
        }
    }
    for key in map.keys() {
        if !fields.iter().any(|(name, _, _)| name == key) {
            return Err(format!("{what} has unexpected key {}", quote_str(key)));
        }
    }
    Ok(())
}

const ERROR: [(&str, Kind, bool); 3] = [
    ("type", Kind::Str, true),
    ("message", Kind::Str, true),
    ("traceback", Kind::Str, false),
];
const PROVENANCE: [(&str, Kind, bool); 8] = [
    ("code_hash", Kind::Str, true),
    ("operation", Kind::Str, true),
    ("python", Kind::Str, true),
    ("metalab", Kind::Str, true),
    ("host", Kind::Str, true),
    ("pid", Kind::Count, true),
    ("executor", Kind::Str, true),
    ("worker_id", Kind::Str, true),
];
const ARTIFACT: [(&str, Kind, bool); 5] = [
    ("name", Kind::Str, true),
    ("kind", Kind::Str, true),
    ("file", Kind::Str, true),
    ("size", Kind::Count, true),
    ("meta", Kind::Obj, false),
];

/// `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)` naming a real date and time.
pub fn timestamp_ok(text: &str) -> bool {
    let b = text.as_bytes();
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = b.get(from..to)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        })
    };
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        num(0, 4),
        num(5, 7),
        num(8, 10),
        num(11, 13),
        num(14, 16),
        num(17, 19),
    ) else {
        return false;
    };
    if !(sep(4, b'-') && sep(7, b'-') && sep(10, b'T') && sep(13, b':') && sep(16, b':')) {
        return false;
    }
    let mut at = 19;
    if sep(at, b'.') {
        let digits = b[at + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if !(1..=6).contains(&digits) {
            return false;
        }
        at += 1 + digits;
    }
    let offset_ok = match &b[at..] {
        b"Z" => true,
        [sign, _, _, b':', _, _] if *sign == b'+' || *sign == b'-' => {
            matches!((num(at + 1, at + 3), num(at + 4, at + 6)), (Some(h), Some(m)) if h < 24 && m < 60)
        }
        _ => false,
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    offset_ok && year >= 1 && (1..=days).contains(&day) && hour < 24 && minute < 60 && second < 60
}

fn check_series(series: &Map<String, Value>) -> Result<(), String> {
    for (name, points) in series {
        let place = format!("'metric_series'[{}]", quote_str(name));
        let Some(points) = points.as_array() else {
            return Err(format!(
                "{place} must be an array of [step, value] pairs, got {}",
                got(points)
            ));
        };
        for (at, point) in points.iter().enumerate() {
            let pair = point.as_array().filter(|p| p.len() == 2);
            if pair.is_none_or(|p| count(&p[0]).is_none()) {
                return Err(format!(
                    "{place}[{at}] must be a [step, value] pair with an integer step in \
                     [0, 2**63), got {}",
                    got(point)
                ));
            }
        }
    }
    Ok(())
}

/// A present, non-null optional field.
fn given(slot: &Option<Value>) -> Option<&Value> {
    slot.as_ref().filter(|v| !v.is_null())
}

pub(crate) fn check_optional(f: &Fields) -> Result<(), String> {
    for (key, slot) in [("metrics", &f.metrics), ("metric_series", &f.metric_series)] {
        if let Some(v) = given(slot) {
            let Some(map) = v.as_object() else {
                return Err(format!(
                    "{} must be an object or null, got {}",
                    quote_str(key),
                    got(v)
                ));
            };
            if key == "metric_series" {
                check_series(map)?;
            }
        }
    }
    for (key, slot) in [
        ("started_at", &f.started_at),
        ("finished_at", &f.finished_at),
    ] {
        if let Some(v) = given(slot) {
            if !v.as_str().is_some_and(timestamp_ok) {
                return Err(format!(
                    "{} must be a timestamp like 2026-01-31T12:00:00+00:00 or null, got {}",
                    quote_str(key),
                    got(v)
                ));
            }
        }
    }
    if let Some(v) = given(&f.duration_s) {
        if !v.is_number() {
            return Err(format!(
                "'duration_s' must be a number or null, got {}",
                got(v)
            ));
        }
    }
    if let Some(v) = given(&f.error) {
        shape("'error'", v, &ERROR, true)?;
    }
    // Any string is accepted: a kind this version does not know (a newer writer's) loads
    // as no reason, so only the type is checked.
    if let Some(v) = given(&f.reason) {
        if !v.is_string() {
            return Err(format!("'reason' must be a string or null, got {}", got(v)));
        }
    }
    if let Some(v) = given(&f.provenance) {
        shape("'provenance'", v, &PROVENANCE, true)?;
    }
    if let Some(v) = given(&f.artifacts) {
        let Some(items) = v.as_array() else {
            return Err(format!(
                "'artifacts' must be an array or null, got {}",
                got(v)
            ));
        };
        for (at, item) in items.iter().enumerate() {
            shape(&format!("'artifacts'[{at}]"), item, &ARTIFACT, false)?;
        }
    }
    if let Some(v) = given(&f.derived_errors) {
        let Some(map) = v.as_object() else {
            return Err(format!(
                "'derived_errors' must be an object or null, got {}",
                got(v)
            ));
        };
        for (name, text) in map {
            if !text.is_string() {
                return Err(format!(
                    "'derived_errors'[{}] must be a string, got {}",
                    quote_str(name),
                    got(text)
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        for ok in [
            "2026-01-31T12:00:00+00:00",
            "0001-01-01T00:00:00.1Z",
            "9999-12-31T23:59:59.999999-23:59",
        ] {
            assert!(timestamp_ok(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-01-31",
            "2026-01-31 12:00:00+00:00",
            "2026-01-31T12:00:00",
            "2026-01-31T12:00:00.+00:00",
            "2026-01-31T12:00:00.1234567+00:00",
            "2026-13-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:60Z",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00+00:60",
            "2026-01-01T00:00:00+0000",
            "２026-01-01T00:00:00Z",
        ] {
            assert!(!timestamp_ok(bad), "{bad}");
        }
    }
}

//! The checks a stored run record must pass before it is loaded.
//!
//! The list is written once, in the docstring of `python/metalab/store/record_codec.py`
//! (checks 1-4, in the order they apply); this module implements it for the Rust column
//! loader and that module for the Python loaders. Both report the first failing check
//! with the same words (only the parser's detail inside `not valid JSON (...)` differs),
//! and `tests/reliability/test_corrupt_store.py` runs both over one corpus of corrupt
//! records (`tests/reliability/corrupt_records/`).
//!
//! [`check`] first tries `crate::record_fast` (one typed pass that only succeeds on a
//! valid record); otherwise [`check_slow`] decides: a hand-written map visitor stores
//! each known key as a `Value` (the last duplicate wins, as in Python's `json`), skips
//! the others without building them, and the checks run in the documented order.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::encoding::quote_str;

/// Record statuses accepted by `metalab.records.RunState`.
pub const STATUSES: [&str; 4] = ["success", "failed", "cancelled", "running"];

/// The fields of a record document the checks look at, as parsed.
#[derive(Default)]
pub struct Fields {
    pub run_id: Option<Value>,
    pub experiment_id: Option<Value>,
    pub status: Option<Value>,
    pub context_fingerprint: Option<Value>,
    pub params_fingerprint: Option<Value>,
    pub seed_fingerprint: Option<Value>,
    pub params: Option<Value>,
    pub task_index: Option<Value>,
    pub replicate: Option<Value>,
    pub metrics: Option<Value>,
    pub metric_series: Option<Value>,
    pub started_at: Option<Value>,
    pub finished_at: Option<Value>,
    pub duration_s: Option<Value>,
    pub error: Option<Value>,
    pub provenance: Option<Value>,
    pub artifacts: Option<Value>,
    pub derived_errors: Option<Value>,
}

/// Where a known key's value goes.
type Slot = fn(&mut Fields) -> &mut Option<Value>;

impl Fields {
    /// The slot of a key the checks use, `None` for any other key (skipped unparsed).
    fn slot_of(key: &str) -> Option<Slot> {
        let slot: Slot = match key {
            "run_id" => |f| &mut f.run_id,
            "experiment_id" => |f| &mut f.experiment_id,
            "status" => |f| &mut f.status,
            "context_fingerprint" => |f| &mut f.context_fingerprint,
            "params_fingerprint" => |f| &mut f.params_fingerprint,
            "seed_fingerprint" => |f| &mut f.seed_fingerprint,
            "params" => |f| &mut f.params,
            "task_index" => |f| &mut f.task_index,
            "replicate" => |f| &mut f.replicate,
            "metrics" => |f| &mut f.metrics,
            "metric_series" => |f| &mut f.metric_series,
            "started_at" => |f| &mut f.started_at,
            "finished_at" => |f| &mut f.finished_at,
            "duration_s" => |f| &mut f.duration_s,
            "error" => |f| &mut f.error,
            "provenance" => |f| &mut f.provenance,
            "artifacts" => |f| &mut f.artifacts,
            "derived_errors" => |f| &mut f.derived_errors,
            _ => return None,
        };
        Some(slot)
    }
}

/// A map key, as the slot of its value (matched on the borrowed key: no allocation).
struct Key(Option<Slot>);

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key(Fields::slot_of(v)))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0 {
                Some(slot) => *slot(&mut fields) = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

/// Checks 1 and 2: parse `data`; `Err` is the reason (without location).
pub fn parse_fields(data: &[u8]) -> Result<Fields, String> {
    use serde_json::error::Category;
    match serde_json::from_slice::<Fields>(data) {
        Ok(fields) => Ok(fields),
        // A type error can only come from the top-level value (every field is a Value);
        // a syntax error further on still makes the text "not valid JSON".
        Err(e) if e.classify() == Category::Data => {
            match serde_json::from_slice::<IgnoredAny>(data) {
                Err(syntax) => Err(format!("not valid JSON ({syntax})")),
                Ok(_) => Err("expected a JSON object".to_string()),
            }
        }
        Err(e) => Err(format!("not valid JSON ({e})")),
    }
}

/// How messages name a value: its JSON type, except strings (quoted, cut at 40
/// characters), booleans and 64-bit integers.
pub fn got(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => "number".into(),
        },
        Value::String(s) => got_str(s),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn got_str(s: &str) -> String {
    if s.chars().count() <= 40 {
        quote_str(s)
    } else {
        let head: String = s.chars().take(40).collect();
        format!("{}...", quote_str(&head))
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Obj,
    Count,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Obj => "an object",
            Kind::Count => "an integer in [0, 2**63)",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        match self {
            Kind::Str => value.is_string(),
            Kind::Obj => value.is_object(),
            Kind::Count => count(value).is_some(),
        }
    }
}

fn count(value: &Value) -> Option<i64> {
    value.as_i64().filter(|i| *i >= 0)
}

fn required(slot: &Option<Value>, key: &str, kind: Kind) -> Result<(), String> {
    match slot {
        None => Err(format!("missing key {}", quote_str(key))),
        Some(v) if !kind.accepts(v) => Err(format!(
            "{} must be {}, got {}",
            quote_str(key),
            kind.name(),
            got(v)
        )),
        Some(_) => Ok(()),
    }
}

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

fn check_optional(f: &Fields) -> Result<(), String> {
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

fn check_fields(f: &Fields, run_id: Option<&str>) -> Result<(), String> {
    required(&f.run_id, "run_id", Kind::Str)?;
    let inner = f
        .run_id
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or_default();
    if inner.is_empty() {
        return Err("'run_id' must be a non-empty string, got ''".into());
    }
    if let Some(expected) = run_id {
        if inner != expected {
            return Err(format!(
                "run_id {} differs from the run ID it is stored under, {}: a record copied \
                 over another run's?",
                got_str(inner),
                got_str(expected)
            ));
        }
    }
    required(&f.experiment_id, "experiment_id", Kind::Str)?;
    required(&f.status, "status", Kind::Str)?;
    let status = f
        .status
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !STATUSES.contains(&status) {
        return Err(format!(
            "unknown status {}: expected success, failed, cancelled or running",
            got_str(status)
        ));
    }
    required(&f.context_fingerprint, "context_fingerprint", Kind::Str)?;
    required(&f.params_fingerprint, "params_fingerprint", Kind::Str)?;
    required(&f.seed_fingerprint, "seed_fingerprint", Kind::Str)?;
    required(&f.params, "params", Kind::Obj)?;
    required(&f.task_index, "task_index", Kind::Count)?;
    required(&f.replicate, "replicate", Kind::Count)?;
    check_optional(f)
}

/// What the loaders keep of a record that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub run_id: String,
    pub experiment_id: String,
    pub status: String,
    pub task_index: i64,
    pub replicate: i64,
    pub duration_s: Option<f64>,
    pub started_at: Option<String>,
    pub params: Map<String, Value>,
    /// Empty when the record has none (absent or `null`).
    pub metrics: Map<String, Value>,
}

fn text(value: Option<Value>) -> String {
    match value {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}

fn object(value: Option<Value>) -> Map<String, Value> {
    match value {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

impl From<Fields> for Checked {
    fn from(f: Fields) -> Checked {
        let int = |v: &Option<Value>| v.as_ref().and_then(Value::as_i64).unwrap_or(0);
        Checked {
            task_index: int(&f.task_index),
            replicate: int(&f.replicate),
            duration_s: f.duration_s.as_ref().and_then(Value::as_f64),
            started_at: match f.started_at {
                Some(Value::String(s)) => Some(s),
                _ => None,
            },
            run_id: text(f.run_id),
            experiment_id: text(f.experiment_id),
            status: text(f.status),
            params: object(f.params),
            metrics: object(f.metrics),
        }
    }
}

/// Checks 1-4 on `data` the thorough way, which also words the first failure.
pub fn check_slow(data: &[u8], run_id: Option<&str>) -> Result<Checked, String> {
    let fields = parse_fields(data)?;
    check_fields(&fields, run_id).map_err(|why| format!("not a run record ({why})"))?;
    Ok(fields.into())
}

/// Checks 1-4 on `data`; `run_id` is the id the record is stored under, when known.
///
/// A valid record takes one typed pass (`crate::record_fast`); anything else is decided
/// by [`check_slow`]. `Err` is the reason, without the location: `not valid JSON (...)`,
/// `expected a JSON object` or `not a run record (...)`.
pub fn check(data: &[u8], run_id: Option<&str>) -> Result<Checked, String> {
    match crate::record_fast::parse(data, run_id) {
        Some(checked) => Ok(checked),
        None => check_slow(data, run_id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"run_id": "ab", "experiment_id": "e:1", "status": "success",
        "context_fingerprint": "c", "params_fingerprint": "p", "seed_fingerprint": "s",
        "params": {}, "task_index": 0, "replicate": 0"#;

    fn with(extra: &str) -> String {
        format!("{BASE}{extra}}}")
    }

    fn reason(body: &str) -> String {
        check(body.as_bytes(), Some("ab")).err().unwrap_or_default()
    }

    #[test]
    fn a_complete_record_passes() {
        let body = with(
            r#", "metrics": {"m": "NaN"}, "metric_series": {"m": [[0, 1.5], [3, "NaN"]]},
            "started_at": "2024-02-29T23:59:59.123456+05:30", "finished_at": "2026-01-01T00:00:00Z",
            "duration_s": 1, "error": {"type": "E", "message": "m"}, "artifacts": [{"name": "a",
            "kind": "json", "file": "a.json", "size": 3}], "derived_errors": {"d": "x"},
            "provenance": {"code_hash": "h", "operation": "o", "python": "3", "metalab": "0",
            "host": "h", "pid": 7, "executor": "thread", "worker_id": "w"}, "schema": 1"#,
        );
        assert_eq!(reason(&body), "");
        // Nulls stand for absent optional fields; the last duplicate key wins.
        assert_eq!(
            reason(&with(r#", "error": null, "run_id": 5, "run_id": "ab""#)),
            ""
        );
    }

    #[test]
    fn parse_failures() {
        assert!(reason(r#"{"run_id": "ab""#).starts_with("not valid JSON ("));
        assert!(reason("[1, 2").starts_with("not valid JSON ("));
        assert!(reason(r#"{"a": NaN}"#).starts_with("not valid JSON ("));
        assert_eq!(reason("[1, 2]"), "expected a JSON object");
        assert_eq!(reason("-0"), "expected a JSON object");
        assert!(reason(&with("} x")).starts_with("not valid JSON ("));
    }

    #[test]
    fn field_failures_name_the_field_and_value() {
        let cases = [
            (
                BASE.replace(r#""run_id": "ab", "#, "") + "}",
                "missing key 'run_id'",
            ),
            (
                with("").replace(r#""ab""#, r#""cd""#),
                "run_id 'cd' differs from the run ID it is stored under, 'ab': a record \
                 copied over another run's?",
            ),
            (
                with("").replace("success", "weird"),
                "unknown status 'weird': expected success, failed, cancelled or running",
            ),
            (
                with("").replace(r#""task_index": 0"#, r#""task_index": -0"#),
                "'task_index' must be an integer in [0, 2**63), got number",
            ),
            (
                with("").replace(r#""replicate": 0"#, r#""replicate": true"#),
                "'replicate' must be an integer in [0, 2**63), got true",
            ),
            (
                with(r#", "started_at": "2026-02-29T00:00:00+00:00""#),
                "'started_at' must be a timestamp like 2026-01-31T12:00:00+00:00 or null, \
                 got '2026-02-29T00:00:00+00:00'",
            ),
            (
                with(r#", "metric_series": {"m": [[-1, 2]]}"#),
                "'metric_series'['m'][0] must be a [step, value] pair with an integer step \
                 in [0, 2**63), got array",
            ),
            (
                with(r#", "error": {"type": "E"}"#),
                "'error' lacks key 'message'",
            ),
            (
                with(
                    r#", "artifacts": [{"name": "a", "kind": "k", "file": "f", "size": 1, "x": 2}]"#,
                ),
                "'artifacts'[0] has unexpected key 'x'",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(
                reason(&body),
                format!("not a run record ({want})"),
                "{body}"
            );
        }
    }

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

//! The checks a stored run record must pass before it is loaded.
//!
//! The list is written once, in the docstring of `python/metalab/store/record_codec.py`
//! (checks 1-4, in the order they apply); this module implements it for the Rust column
//! loader and that module for the Python loaders. Both report the first failing check
//! with the same words (only the parser's detail inside `not valid JSON (...)` differs),
//! and `tests/reliability/test_corrupt_store.py` runs both over one corpus of corrupt
//! records (`tests/reliability/corrupt_records/`).
//!
//! The parse (checks 1-2) is `crate::record_fields`, the optional fields (check 4) are
//! `crate::record_optional`; the required fields (check 3) and the entry points are here.
//!
//! [`check`] first tries `crate::record_fast` (one typed pass that only succeeds on a
//! valid record); otherwise [`check_slow`] decides: it parses the fields the checks look
//! at (`crate::record_fields`) and runs the checks in the documented order.

use serde_json::{Map, Value};

use crate::encoding::quote_str;
use crate::record_fields::{parse_fields, Fields};
use crate::record_optional::check_optional;

/// Record statuses accepted: the values of `metalab.records.RunState` (exported as
/// `_core.RECORD_STATUSES`, which a Python test compares with `RunState`).
pub const STATUSES: [&str; 4] = ["success", "failed", "cancelled", "running"];

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

pub(crate) fn got_str(s: &str) -> String {
    if s.chars().count() <= 40 {
        quote_str(s)
    } else {
        let head: String = s.chars().take(40).collect();
        format!("{}...", quote_str(&head))
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Obj,
    Count,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Obj => "an object",
            Kind::Count => "an integer in [0, 2**63)",
        }
    }

    pub(crate) fn accepts(self, value: &Value) -> bool {
        match self {
            Kind::Str => value.is_string(),
            Kind::Obj => value.is_object(),
            Kind::Count => count(value).is_some(),
        }
    }
}

pub(crate) fn count(value: &Value) -> Option<i64> {
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

/// The text of a field already checked to be a string.
fn str_of(slot: &Option<Value>) -> &str {
    slot.as_ref().and_then(Value::as_str).unwrap_or_default()
}

fn check_fields(f: &Fields, run_id: Option<&str>) -> Result<(), String> {
    required(&f.run_id, "run_id", Kind::Str)?;
    let inner = str_of(&f.run_id);
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
    let status = str_of(&f.status);
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
}

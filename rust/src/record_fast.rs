//! The fast path of the record checks: one typed pass for records that pass them all.
//!
//! Building a `Value` for every field (`record_checks`) made loading 100,000 records about
//! 60% slower than before the checks. Here the fields that are only checked, never kept
//! (fingerprints, provenance, artifacts, errors, series), are validated while they are
//! parsed, borrowing their strings instead of allocating them. Whatever this path cannot
//! accept — anything wrong, but also what it is simply stricter about, such as a
//! repeated key — falls back to `record_checks`, which decides and words the reason.
//! So the one rule is: this path accepts a subset of what `record_checks` accepts, with
//! the same values (checked by the unit tests below and by the Python differential tests).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::record_checks::Checked;
use crate::record_optional::timestamp_ok;

/// A string that must be there and is not kept.
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

/// A timestamp string (checked), kept.
struct Stamp(String);

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if timestamp_ok(&text) {
            Ok(Stamp(text))
        } else {
            Err(de::Error::custom("not a timestamp"))
        }
    }
}

/// A timestamp string (checked), not kept: borrowed, never allocated.
struct AnyStamp;

impl<'de> Deserialize<'de> for AnyStamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyStamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a timestamp")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AnyStamp, E> {
                if timestamp_ok(v) {
                    Ok(AnyStamp)
                } else {
                    Err(E::custom("not a timestamp"))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// An integer in `[0, 2**63)`.
struct Count(i64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer in [0, 2**63)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                if v >= 0 {
                    Ok(Count(v))
                } else {
                    Err(E::custom("negative"))
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                i64::try_from(v)
                    .map(Count)
                    .map_err(|_| E::custom("too large"))
            }
        }
        d.deserialize_i64(V)
    }
}

/// An object whose keys are anything and whose values must all be `T`.
struct ObjectOf<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ObjectOf<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, T>()?.is_some() {}
                Ok(ObjectOf(PhantomData))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// An array whose items must all be `T` (not collected).
struct ArrayOf<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ArrayOf<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = ArrayOf<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<T>()?.is_some() {}
                Ok(ArrayOf(PhantomData))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// A non-null present value for optional keys that may not be null (`traceback`, `meta`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ErrorInfo {
    r#type: AnyStr,
    message: AnyStr,
    #[serde(default, deserialize_with = "present")]
    traceback: Option<AnyStr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Provenance {
    code_hash: AnyStr,
    operation: AnyStr,
    python: AnyStr,
    metalab: AnyStr,
    host: AnyStr,
    pid: Count,
    executor: AnyStr,
    worker_id: AnyStr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Artifact {
    name: AnyStr,
    kind: AnyStr,
    file: AnyStr,
    size: Count,
    #[serde(default, deserialize_with = "present")]
    meta: Option<ObjectOf<IgnoredAny>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Success,
    Failed,
    Cancelled,
    Running,
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Running => "running",
        }
    }
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Record {
    run_id: String,
    experiment_id: String,
    status: Status,
    context_fingerprint: AnyStr,
    params_fingerprint: AnyStr,
    seed_fingerprint: AnyStr,
    params: Map<String, Value>,
    task_index: Count,
    replicate: Count,
    #[serde(default)]
    metrics: Option<Map<String, Value>>,
    #[serde(default)]
    metric_series: Option<ObjectOf<ArrayOf<(Count, IgnoredAny)>>>,
    #[serde(default)]
    started_at: Option<Stamp>,
    #[serde(default)]
    finished_at: Option<AnyStamp>,
    #[serde(default)]
    duration_s: Option<f64>,
    #[serde(default)]
    error: Option<ErrorInfo>,
    #[serde(default)]
    provenance: Option<Provenance>,
    #[serde(default)]
    artifacts: Option<ArrayOf<Artifact>>,
    #[serde(default)]
    derived_errors: Option<ObjectOf<AnyStr>>,
    #[serde(default)]
    reason: Option<AnyStr>,
}

/// The record's kept values when it passes every check on this path; `None` when the
/// slow path must decide.
pub fn parse(data: &[u8], run_id: Option<&str>) -> Option<Checked> {
    let record: Record = serde_json::from_slice(data).ok()?;
    if record.run_id.is_empty() || run_id.is_some_and(|id| id != record.run_id) {
        return None;
    }
    Some(Checked {
        run_id: record.run_id,
        experiment_id: record.experiment_id,
        status: record.status.name().to_string(),
        task_index: record.task_index.0,
        replicate: record.replicate.0,
        duration_s: record.duration_s,
        started_at: record.started_at.map(|s| s.0),
        params: record.params,
        metrics: record.metrics.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_checks::check_slow;

    /// The corpus the Python tests use, plus the fast path's own edge cases.
    fn documents() -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/reliability/corrupt_records");
        let mut docs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .expect("corpus directory")
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().is_some_and(|n| n != "cases.json"))
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        let base = String::from_utf8(std::fs::read(dir.join("ok_full.json")).unwrap()).unwrap();
        for (from, to) in [
            (r#""traceback""#, r#""x""#),
            (
                r#""error": null"#,
                r#""error": {"type": "E", "message": "m", "traceback": null}"#,
            ),
            (r#""meta": {}"#, r#""meta": null"#),
            (r#""schema": 1"#, r#""schema": 1, "run_id": "x""#),
            (r#""pid": 4242"#, r#""pid": 4242.0"#),
            (r#""replicate": 1"#, r#""replicate": -0"#),
            (r#""duration_s": 0.876544"#, r#""duration_s": 7"#),
            (
                r#""derived_errors": {}"#,
                r#""derived_errors": {"f": null}"#,
            ),
        ] {
            docs.push((format!("edit {to}"), base.replace(from, to).into_bytes()));
        }
        docs
    }

    #[test]
    fn accepts_only_what_the_checks_accept_with_the_same_values() {
        let mut fast_accepted = 0;
        for (name, data) in documents() {
            let id = "5f0c3d2e1b4a69788796a5b4c3d2e1f0";
            let slow = check_slow(&data, Some(id));
            match parse(&data, Some(id)) {
                Some(fast) => {
                    let slow = slow.unwrap_or_else(|e| panic!("{name}: fast accepted, {e}"));
                    assert_eq!(fast, slow, "{name}");
                    fast_accepted += 1;
                }
                None => {
                    // Stricter here is allowed only where the slow path decides anyway.
                    if slow.is_ok() {
                        assert!(
                            name.contains("duplicate") || name.contains("edit"),
                            "{name}"
                        );
                    }
                }
            }
        }
        assert!(fast_accepted >= 6, "{fast_accepted}");
    }

    #[test]
    fn every_status_takes_the_fast_path() {
        let base = r#"{"run_id": "ab", "experiment_id": "e:1", "status": "STATUS",
            "context_fingerprint": "c", "params_fingerprint": "p", "seed_fingerprint": "s",
            "params": {}, "task_index": 0, "replicate": 0}"#;
        for status in crate::record_checks::STATUSES {
            let doc = base.replace("STATUS", status);
            let fast = parse(doc.as_bytes(), Some("ab")).expect(status);
            assert_eq!(fast.status, status);
        }
    }
}

//! Checks 1 and 2 of a stored run record (see `crate::record_checks`): the document is
//! JSON, and a JSON object. A hand-written map visitor stores each key the later checks
//! look at as a `Value` (the last duplicate wins, as in Python's `json`) and skips the
//! others without building them.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

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
    pub reason: Option<Value>,
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
            "reason" => |f| &mut f.reason,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_are_kept_the_last_duplicate_winning() {
        let f = parse_fields(br#"{"run_id": 1, "x": [1, {"y": 2}], "run_id": "ab"}"#).unwrap();
        assert_eq!(f.run_id, Some(Value::String("ab".into())));
        assert!(f.status.is_none());
        assert_eq!(
            parse_fields(b"[1]").err().unwrap(),
            "expected a JSON object"
        );
        assert!(parse_fields(b"{")
            .err()
            .unwrap()
            .starts_with("not valid JSON ("));
    }
}

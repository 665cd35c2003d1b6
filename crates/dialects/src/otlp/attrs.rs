//! OTLP attribute values as JSON, and lookups by key.

use serde_json::{Map, Number, Value};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// An `AnyValue` as JSON: strings, booleans and numbers as themselves, arrays
/// and key-value lists as arrays and objects, bytes as lowercase hex.
/// Non-finite doubles become the strings "NaN", "Infinity", "-Infinity".
pub fn to_json(v: &AnyValue) -> Value {
    match &v.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::Number((*i).into()),
        Some(any_value::Value::DoubleValue(d)) => match Number::from_f64(*d) {
            Some(n) => Value::Number(n),
            None if d.is_nan() => Value::String("NaN".into()),
            None if *d > 0.0 => Value::String("Infinity".into()),
            None => Value::String("-Infinity".into()),
        },
        Some(any_value::Value::ArrayValue(a)) => {
            Value::Array(a.values.iter().map(to_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(object(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex::encode(b)),
        // A profiles-only dictionary reference; meaningless outside a profile.
        Some(any_value::Value::StringValueStrindex(i)) => serde_json::json!({ "strindex": i }),
    }
}

/// Key-value pairs as a JSON object (a repeated key keeps its last value).
pub fn object(kvs: &[KeyValue]) -> Map<String, Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map_or(Value::Null, to_json),
            )
        })
        .collect()
}

/// Lookups over one span's (or record's) attributes.
pub struct Attrs<'a>(pub &'a [KeyValue]);

impl<'a> Attrs<'a> {
    pub fn get(&self, key: &str) -> Option<&'a AnyValue> {
        self.0.iter().rev().find(|kv| kv.key == key)?.value.as_ref()
    }

    /// A non-empty string value of the first key present.
    pub fn str(&self, keys: &[&str]) -> Option<&'a str> {
        keys.iter().find_map(|k| match &self.get(k)?.value {
            Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
    }

    /// An integer value (or an integral double, or a numeric string) of the
    /// first key present.
    pub fn int(&self, keys: &[&str]) -> Option<i64> {
        keys.iter().find_map(|k| match &self.get(k)?.value {
            Some(any_value::Value::IntValue(i)) => Some(*i),
            Some(any_value::Value::DoubleValue(d)) if d.is_finite() && d.fract() == 0.0 => {
                Some(*d as i64)
            }
            Some(any_value::Value::StringValue(s)) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A finite number of the first key present.
    pub fn num(&self, keys: &[&str]) -> Option<f64> {
        keys.iter().find_map(|k| match &self.get(k)?.value {
            Some(any_value::Value::IntValue(i)) => Some(*i as f64),
            Some(any_value::Value::DoubleValue(d)) if d.is_finite() => Some(*d),
            Some(any_value::Value::StringValue(s)) => {
                s.trim().parse().ok().filter(|f: &f64| f.is_finite())
            }
            _ => None,
        })
    }

    /// The first key present, as JSON; a string holding a JSON object or array
    /// (how the GenAI conventions send messages and tool arguments) is parsed.
    pub fn json(&self, keys: &[&str]) -> Option<Value> {
        keys.iter().find_map(|k| {
            let v = self.get(k)?;
            Some(match &v.value {
                Some(any_value::Value::StringValue(s)) => parse_embedded(s),
                _ => to_json(v),
            })
        })
    }

    /// Indexed attributes under `prefix` (`gen_ai.prompt.0.role`,
    /// `llm.input_messages.1.message.content`, …) gathered into an array of
    /// objects in index order; `strip` is removed from the front of each sub-key.
    pub fn indexed(&self, prefix: &str, strip: &str) -> Option<Value> {
        let mut items: Vec<(usize, Map<String, Value>)> = Vec::new();
        for kv in self.0 {
            let Some(rest) = kv.key.strip_prefix(prefix) else {
                continue;
            };
            let Some((idx, sub)) = rest.split_once('.') else {
                continue;
            };
            let Ok(idx) = idx.parse::<usize>() else {
                continue;
            };
            let sub = sub.strip_prefix(strip).unwrap_or(sub);
            let value = kv.value.as_ref().map_or(Value::Null, to_json);
            match items.iter_mut().find(|(i, _)| *i == idx) {
                Some((_, m)) => {
                    m.insert(sub.to_owned(), value);
                }
                None => {
                    let mut m = Map::new();
                    m.insert(sub.to_owned(), value);
                    items.push((idx, m));
                }
            }
        }
        if items.is_empty() {
            return None;
        }
        items.sort_by_key(|(i, _)| *i);
        Some(Value::Array(
            items.into_iter().map(|(_, m)| Value::Object(m)).collect(),
        ))
    }
}

/// A string that holds a JSON object or array, parsed; anything else as a string.
pub fn parse_embedded(s: &str) -> Value {
    let t = s.trim_start();
    if (t.starts_with('{') || t.starts_with('['))
        && let Ok(v) = serde_json::from_str::<Value>(s)
    {
        return v;
    }
    Value::String(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn values_and_lookups() {
        use any_value::Value as V;
        let a = [
            kv("s", V::StringValue("x".into())),
            kv("i", V::IntValue(7)),
            kv("d", V::DoubleValue(f64::NAN)),
            kv("j", V::StringValue(r#"[{"role":"user"}]"#.into())),
            kv("gen_ai.prompt.1.content", V::StringValue("b".into())),
            kv("gen_ai.prompt.0.content", V::StringValue("a".into())),
            kv("gen_ai.prompt.0.role", V::StringValue("user".into())),
            kv("b", V::BytesValue(vec![1, 255])),
        ];
        let a = Attrs(&a);
        assert_eq!(a.str(&["missing", "s"]), Some("x"));
        assert_eq!(a.int(&["i"]), Some(7));
        assert_eq!(a.num(&["d"]), None);
        assert_eq!(a.json(&["j"]).unwrap()[0]["role"], "user");
        assert_eq!(
            a.indexed("gen_ai.prompt.", "").unwrap(),
            serde_json::json!([{"content":"a","role":"user"},{"content":"b"}])
        );
        assert_eq!(to_json(a.get("b").unwrap()), "01ff");
        assert_eq!(to_json(a.get("d").unwrap()), "NaN");
    }
}

//! I-JSON (RFC 7493) checks for the objects the ledger stores verbatim.
//!
//! A payload is kept byte for byte and hashed as sent, so it must mean one
//! thing to every reader: a member name given twice is read as the first
//! value by some parsers and the last by others, and a number beyond the range
//! of a double is read as infinity, an error, or a rounded value. Either
//! would let two verifiers, or an auditor and an attacker, disagree about what
//! an event said. Both are refused at the door.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct IJsonError(pub String);

/// Check that `text` (valid JSON) has no duplicate member names in any object
/// and no number outside the range of an IEEE 754 double.
pub fn check(text: &str) -> Result<(), IJsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut names = Vec::new();
    Strict { names: &mut names }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| IJsonError(e.to_string()))
}

/// One walk over the document. Member names of the objects being read are
/// kept on one shared stack (borrowed from the text when unescaped), so an
/// object costs no allocation of its own: this runs on every ingested event.
struct Strict<'a, 'de> {
    names: &'a mut Vec<Cow<'de, str>>,
}

/// Objects with more members than this are checked by sorting a copy.
const SCAN_MEMBERS: usize = 16;

impl<'de> DeserializeSeed<'de> for Strict<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// A member name, borrowed from the text when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Visitor<'de> for Strict<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(E::custom("number out of the range of a double"))
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Strict {
                names: &mut *self.names,
            })?
            .is_some()
        {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let start = self.names.len();
        while let Some(Name(name)) = map.next_key()? {
            let mine = &self.names[start..];
            if mine.len() < SCAN_MEMBERS && mine.contains(&name) {
                return Err(twice(&name));
            }
            map.next_value_seed(Strict {
                names: &mut *self.names,
            })?;
            self.names.push(name);
        }
        if self.names.len() - start >= SCAN_MEMBERS {
            let mut sorted: Vec<&str> = self.names[start..].iter().map(|n| n.as_ref()).collect();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(twice(w[0]));
            }
        }
        self.names.truncate(start);
        Ok(())
    }
}

fn twice<E: de::Error>(name: &str) -> E {
    E::custom(format_args!(
        "member {:?} appears twice in one object",
        truncate(name)
    ))
}

/// At most 64 characters of a name, for the error message.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_ordinary_json() {
        for ok in [
            r#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#,
            r#"{"n":1.7976931348623157e308,"m":-5e-324,"big":18446744073709551616}"#,
            r#"{"\u0061b":1,"ab\n":2}"#,
            "{}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_duplicates_at_any_depth_and_numbers_out_of_range() {
        for bad in [
            r#"{"a":1,"a":2}"#,
            r#"{"x":{"y":[{"k":1,"k":1}]}}"#,
            r#"{"\u0061":1,"a":2}"#,
            r#"{"a":{"b":1},"b":2,"a":3}"#,
            r#"{"n":1e400}"#,
            r#"{"n":-1e309}"#,
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
        let huge = format!(r#"{{"n":1{}}}"#, "0".repeat(400));
        assert!(check(&huge).is_err());
        // Past the linear scan: a duplicate among many members, at any position.
        let many = |dup: usize| {
            let mut names: Vec<String> = (0..40).map(|i| format!("\"m{i}\":{i}")).collect();
            names.push(format!("\"m{dup}\":0"));
            format!("{{{}}}", names.join(","))
        };
        assert!(check(&many(3)).is_err());
        assert!(check(&many(39)).is_err());
        let distinct: Vec<String> = (0..40)
            .map(|i| format!("\"m{i}\":{{\"m{i}\":1}}"))
            .collect();
        assert_eq!(check(&format!("{{{}}}", distinct.join(","))), Ok(()));
    }
}

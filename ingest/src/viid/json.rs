//! A request body read as JSON that borrows its text from the body.
//!
//! A vehicle record is a dozen short fields and an image of 10-15 KB of base64 text.
//! Read as `serde_json::Value`, every key, every string and every image is copied into an
//! allocation of its own; here strings without escapes (all keys, the base64 images)
//! point into the body, and objects are short lists instead of maps. Reading bodies this
//! way made the receiver ~1.2x faster (BENCHMARKS.md, "GA/T 1400 receiver").

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Number, Value};

/// A JSON value whose strings point into the text it was read from where they can.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Object<'a>),
}

/// A JSON object: its members in the order sent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Object<'a>(Vec<(Cow<'a, str>, Json<'a>)>);

impl<'a> Object<'a> {
    /// The member named `key`; of a key sent twice, the last (as `serde_json` reads it).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }

    pub fn insert(&mut self, key: impl Into<Cow<'a, str>>, value: Json<'a>) {
        let key = key.into();
        match self.0.iter_mut().rev().find(|(name, _)| *name == key) {
            Some((_, held)) => *held = value,
            None => self.0.push((key, value)),
        }
    }
}

impl<'a> Json<'a> {
    /// Reads `text` as JSON, borrowing what it can.
    pub fn parse(text: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(text)
    }

    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        self.as_object().and_then(|object| object.get(key))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Json::Object(object) => Some(object),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }
}

/// As it would be written in JSON; arrays and objects by their kind (they are never a
/// field's value, and a whole nested value is no help in an error message).
impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => write!(f, "{n}"),
            Json::Str(s) => write!(f, "{}", Value::String(s.to_string())),
            Json::Array(_) => f.write_str("an array"),
            Json::Object(_) => f.write_str("an object"),
        }
    }
}

/// Written back as JSON (a notification's record lists are received as if posted).
impl Serialize for Json<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::Str(s) => serializer.serialize_str(s),
            Json::Array(items) => serializer.collect_seq(items),
            Json::Object(object) => {
                let mut map = serializer.serialize_map(Some(object.0.len()))?;
                for (key, value) in &object.0 {
                    map.serialize_entry(key.as_ref(), value)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json<'de>, E> {
        Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(text.to_string())))
    }

    fn visit_string<E>(self, text: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(text)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(Object(members)))
    }
}

/// An object's key, borrowed from the text unless it holds escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(text))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text.to_string()))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_without_escapes_point_into_the_text() {
        let text = br#"{"Data": "aGVsbG8=", "Name\u0041": "a\"b", "n": [1, -2, 2.5, true, null]}"#;
        let json = Json::parse(text).expect("valid JSON");
        let object = json.as_object().expect("an object");
        assert!(matches!(
            object.get("Data"),
            Some(Json::Str(Cow::Borrowed("aGVsbG8=")))
        ));
        // Escapes are resolved, in keys and in values (then the string is a copy).
        assert!(matches!(object.get("NameA"), Some(Json::Str(Cow::Owned(s))) if s == "a\"b"));
        assert_eq!(
            object.get("n"),
            Some(&Json::Array(vec![
                Json::Number(1.into()),
                Json::Number((-2).into()),
                Json::Number(Number::from_f64(2.5).expect("finite")),
                Json::Bool(true),
                Json::Null,
            ]))
        );
        assert_eq!(object.get("missing"), None);
    }

    #[test]
    fn it_reads_what_serde_json_reads_and_refuses_what_it_refuses() {
        for text in [
            r#"{"a": {"b": [{"c": "d"}]}, "e": 18446744073709551615, "f": -1e300}"#,
            r#"[]"#,
            r#""just a string""#,
            r#"{"k": 1, "k": 2}"#,
        ] {
            let ours = Json::parse(text.as_bytes()).expect("valid JSON");
            let theirs: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(to_value(&ours), theirs, "{text}");
            // And written back, it reads the same again.
            let written = serde_json::to_string(&ours).expect("serializable");
            assert_eq!(
                Json::parse(written.as_bytes()).expect("valid JSON"),
                ours,
                "{text}"
            );
        }
        for bad in [
            &b"{\"a\": }"[..],
            b"{\"a\": 1",
            b"\xff\xfe",
            b"{\"a\": \"\xff\"}",
            b"[1, 2,]",
            b"",
        ] {
            assert!(Json::parse(bad).is_err(), "{bad:?}");
        }
        // Nesting is bounded as serde_json bounds it: no stack overflow on hostile input.
        let deep = "[".repeat(100_000);
        assert!(Json::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn a_key_sent_twice_reads_as_its_last_value() {
        let json = Json::parse(br#"{"PlateNo": "A", "PlateNo": "B"}"#).expect("valid JSON");
        assert_eq!(json.get("PlateNo").and_then(Json::as_str), Some("B"));
        let mut object = json.as_object().expect("an object").clone();
        object.insert("PlateNo", Json::Str("C".into()));
        assert_eq!(object.get("PlateNo").and_then(Json::as_str), Some("C"));
    }

    #[test]
    fn values_are_shown_as_json_in_messages() {
        let json = Json::parse(br#"{"s": "a\"b", "n": 3.5, "a": [1], "o": {}, "z": null}"#)
            .expect("valid JSON");
        let shown = |key: &str| json.get(key).map(ToString::to_string);
        assert_eq!(shown("s").as_deref(), Some(r#""a\"b""#));
        assert_eq!(shown("n").as_deref(), Some("3.5"));
        assert_eq!(shown("a").as_deref(), Some("an array"));
        assert_eq!(shown("o").as_deref(), Some("an object"));
        assert_eq!(shown("z").as_deref(), Some("null"));
    }

    fn to_value(json: &Json<'_>) -> Value {
        match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::Str(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(to_value).collect()),
            Json::Object(object) => {
                let mut map = serde_json::Map::new();
                for (key, value) in &object.0 {
                    map.insert(key.to_string(), to_value(value));
                }
                Value::Object(map)
            }
        }
    }
}

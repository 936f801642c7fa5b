//! Checks shared by the fuzz targets.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A JSON object with its members in document order and duplicate names kept, because
/// `serde_json::Value` sorts members and drops duplicates.
struct OrderedObject(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;

        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = OrderedObject;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(OrderedObject(members))
            }
        }

        deserializer.deserialize_map(OrderedVisitor)
    }
}

/// The members of an FE error envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope {
    pub msg: String,
    pub code: i64,
    pub data: String,
    pub count: i64,
}

/// Parses an FE error envelope. Panics unless `body` is a JSON object with exactly the
/// members `msg` (string), `code` (integer), `data` (string) and `count` (integer), in
/// that order, because the FE's Jackson output has that order.
pub fn parse_envelope(body: &[u8]) -> Envelope {
    let text = String::from_utf8_lossy(body);
    let object: OrderedObject = match serde_json::from_slice(body) {
        Ok(object) => object,
        Err(e) => panic!("envelope {text:?} is not a JSON object: {e}"),
    };
    let names: Vec<&str> = object.0.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["msg", "code", "data", "count"],
        "envelope {text:?} has the wrong members"
    );

    let values: Vec<&serde_json::Value> = object.0.iter().map(|(_, value)| value).collect();
    let string = |value: &serde_json::Value| match value.as_str() {
        Some(s) => s.to_owned(),
        None => panic!("envelope {text:?}: {value} is not a string"),
    };
    let integer = |value: &serde_json::Value| match value.as_i64() {
        Some(n) => n,
        None => panic!("envelope {text:?}: {value} is not an integer"),
    };
    Envelope {
        msg: string(values[0]),
        code: integer(values[1]),
        data: string(values[2]),
        count: integer(values[3]),
    }
}

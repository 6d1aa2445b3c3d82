//! The upcaster chain: how a stored payload of an older schema version becomes
//! the shape this build reads. A released event is never edited; a change of
//! shape adds a schema version and one step here, a pure function from the
//! payload of version *n* to that of *n + 1*. Decoding runs every step from
//! the stored version up to the current one, so any version ever written is
//! readable by every later build.
//!
//! A version above the current one is not guessed at: it was written by a
//! newer build, and only a build that knows it may read it
//! ([`DecodeError::NewerSchema`]).

use serde_json::{Map, Value};

use crate::error::DecodeError;
use crate::event::Event;
use crate::options::DrinkOptions;
use crate::values::StoreId;

/// One step of the chain: `event_type`'s payload from version `from` to
/// `from + 1`.
struct Step {
    event_type: &'static str,
    from: u16,
    apply: fn(Value) -> Value,
}

/// Every step ever released, oldest first per type.
const CHAIN: &[Step] = &[
    Step {
        event_type: Event::PLACED,
        from: 1,
        apply: placed_v1_to_v2,
    },
    Step {
        event_type: Event::PLACED,
        from: 2,
        apply: placed_v2_to_v3,
    },
    Step {
        event_type: Event::PLACED,
        from: 3,
        apply: placed_v3_to_v4,
    },
];

/// The schema version this build writes for `event_type`, `None` for a type
/// it does not know.
pub fn current_version(event_type: &str) -> Option<u16> {
    let known = Event::TYPES.contains(&event_type);
    known.then(|| {
        CHAIN
            .iter()
            .filter(|s| s.event_type == event_type)
            .map(|s| s.from + 1)
            .max()
            .unwrap_or(1)
    })
}

/// Brings `payload`, stored as `schema_version` of `event_type`, up to the
/// current version. A payload already current is returned as it is.
pub fn upcast(event_type: &str, schema_version: u16, payload: Value) -> Result<Value, DecodeError> {
    let Some(current) = current_version(event_type) else {
        return Err(DecodeError::UnknownType {
            event_type: event_type.to_owned(),
            schema_version,
        });
    };
    if schema_version == 0 {
        return Err(DecodeError::UnknownType {
            event_type: event_type.to_owned(),
            schema_version,
        });
    }
    if schema_version > current {
        return Err(DecodeError::NewerSchema {
            event_type: event_type.to_owned(),
            schema_version,
            known: current,
        });
    }
    let mut payload = payload;
    for version in schema_version..current {
        if let Some(step) = CHAIN
            .iter()
            .find(|s| s.event_type == event_type && s.from == version)
        {
            payload = (step.apply)(payload);
        }
    }
    Ok(payload)
}

/// `OrderPlaced` v2 added the drink's options; every order placed before
/// them was a hot, regular drink.
fn placed_v1_to_v2(payload: Value) -> Value {
    match payload {
        Value::Object(mut map) => {
            map.entry("options")
                .or_insert_with(|| default_options(&DrinkOptions::default()));
            Value::Object(map)
        }
        // Not an object: decoding reports the malformed payload.
        other => other,
    }
}

/// `OrderPlaced` v3 added the pickup number; orders placed before it have
/// none.
fn placed_v2_to_v3(payload: Value) -> Value {
    match payload {
        Value::Object(mut map) => {
            map.entry("pickup_number").or_insert(Value::Null);
            Value::Object(map)
        }
        other => other,
    }
}

/// The fields of the one drink an order held before `OrderPlaced` v4.
const FLAT_LINE: [&str; 4] = ["coffee_name", "coffee_price", "coffee_qty", "options"];

/// `OrderPlaced` v4 holds its drinks as `lines` and names its store; every
/// order placed before it was one drink, in flat fields, at the default
/// store. The flat fields move into the one line (a field that is missing
/// stays missing, so decoding names it).
fn placed_v3_to_v4(payload: Value) -> Value {
    match payload {
        Value::Object(mut map) => {
            let mut line = Map::new();
            for field in FLAT_LINE {
                if let Some(value) = map.remove(field) {
                    line.insert(field.to_owned(), value);
                }
            }
            map.entry("lines")
                .or_insert_with(|| Value::Array(vec![Value::Object(line)]));
            map.entry("store_id")
                .or_insert_with(|| Value::String(StoreId::DEFAULT.to_owned()));
            Value::Object(map)
        }
        other => other,
    }
}

fn default_options(options: &DrinkOptions) -> Value {
    let mut map = Map::new();
    map.insert(
        "temperature".into(),
        Value::String(options.temperature.to_string()),
    );
    map.insert("size".into(), Value::String(options.size.to_string()));
    Value::Object(map)
}

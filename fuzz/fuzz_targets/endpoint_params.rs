//! Endpoint definitions and call parameters from arbitrary input: a definition is refused
//! with a named field or accepted, and an accepted one turns any query-string value into a
//! checked value or a message, never a panic. An accepted value is within its bounds and
//! among its allowed values, and reads back the same from its own text.

#![no_main]

use cityhub_catalog::endpoint::{EndpointSpec, ParamValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The input: a JSON definition, then NUL, then NUL-separated parameter values.
    let (spec, values) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(spec) = serde_json::from_slice::<EndpointSpec>(spec) else {
        return;
    };
    if let Err(err) = spec.check() {
        assert!(!err.field.is_empty() && !err.message.is_empty());
        return;
    }
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 28).expect("date");
    let values: Vec<&str> = std::str::from_utf8(values)
        .map(|text| text.split('\0').collect())
        .unwrap_or_default();
    for (index, param) in spec.params.iter().enumerate() {
        let given = values.get(index).copied();
        match param.value(given, today) {
            Ok(value) => {
                // Text values are what was given; others read back from their own text.
                if let (Some(text), ParamValue::Text(read)) = (given, &value) {
                    assert_eq!(text, read);
                } else if !matches!(value, ParamValue::Text(_) | ParamValue::Timestamp(_)) {
                    let again = param.param_type.parse(&value.to_string());
                    assert_eq!(again.as_ref(), Ok(&value), "{value}");
                }
            }
            Err(message) => assert!(!message.is_empty()),
        }
    }
});

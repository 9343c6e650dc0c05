//! The GB/T 28181 id parser on arbitrary text: it refuses or decodes, never panics, and
//! what it decodes is 20 digits that parse again to the same id.

#![no_main]

use cityhub_catalog::gb28181::parse;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text) {
        Ok(id) => {
            assert_eq!(id.id.len(), 20);
            assert!(id.id.bytes().all(|b| b.is_ascii_digit()));
            assert_eq!(parse(&id.id), Ok(id.clone()));
        }
        Err(err) => assert!(!err.to_string().is_empty()),
    }
});

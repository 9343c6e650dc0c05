//! Camera registry messages (channel records, keepalives, NOTIFY events) as an API batch
//! item or a Kafka message carries them, on arbitrary bytes: each is refused with a named
//! field or read into a record that validates, never a panic.

#![no_main]

use cityhub_catalog::camera::{CameraFeed, CameraOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for feed in [
        CameraFeed::Registrations,
        CameraFeed::Keepalives,
        CameraFeed::Events,
    ] {
        match feed.parse(value.clone(), 1_795_824_000_000) {
            Ok(CameraOp::Register(report)) => {
                assert!(report.fields.validate().is_ok());
                assert_eq!(report.id.id.len(), 20);
            }
            Ok(CameraOp::Signal(signal)) => {
                assert_eq!(signal.id.len(), 20);
                assert!(signal.at <= 1_795_824_000_000 + 5 * 60_000);
            }
            Err(err) => assert!(!err.field.is_empty()),
        }
    }
});

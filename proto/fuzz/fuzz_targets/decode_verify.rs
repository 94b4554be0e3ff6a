//! Feeds arbitrary bytes to envelope decode + verify and to frame decode. Neither may
//! panic; a decoded envelope must re-verify consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_proto::{Frame, SignedAlert};

fuzz_target!(|data: &[u8]| {
    if let Ok(alert) = SignedAlert::decode(data) {
        let first = alert.verify().is_ok();
        // Verification depends only on the original bytes: decoding the re-wrapped
        // envelope gives the same id and the same verdict.
        if let Ok(again) = SignedAlert::decode(&alert.to_envelope()) {
            assert_eq!(again.id(), alert.id());
            assert_eq!(again.verify().is_ok(), first);
        }
    }
    let _ = Frame::decode(data);
});

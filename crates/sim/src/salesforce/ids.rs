//! Salesforce record ids.
//!
//! An id is 15 case-sensitive base-62 characters: a 3-character key prefix naming the object
//! (`001` Account, `003` Contact, `00Q` Lead, `00D` Organization, `005` User, `01g` query
//! locator), then 12 more. Its 18-character form appends a 3-character checksum that encodes
//! which of the 15 are uppercase letters (5 bits per group of 5, as Salesforce documents), so
//! it survives case-insensitive handling. The API answers 18-character ids and accepts either
//! form, in any letter case for the 18-character one.

use crate::clock::hash_str;

pub const ACCOUNT_PREFIX: &str = "001";
pub const CONTACT_PREFIX: &str = "003";
pub const LEAD_PREFIX: &str = "00Q";
pub const ORG_PREFIX: &str = "00D";
pub const USER_PREFIX: &str = "005";
pub const LOCATOR_PREFIX: &str = "01g";

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// `n` in base 62, left-padded with `0` to `width` digits (which keeps ids of one prefix in
/// creation order when sorted as strings: `0-9A-Za-z` is ASCII order).
pub fn base62(mut n: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&digits).into_owned()
}

/// Two characters standing for the org's server ("pod") in its ids, from the org id.
pub fn pod(org_id: &str) -> String {
    base62(hash_str(org_id) % (62 * 62), 2)
}

/// The 18-character id of prefix, pod and sequence number `n`.
pub fn make(prefix: &str, pod: &str, n: u64) -> String {
    to18(&format!("{prefix}{pod}{}", base62(n, 10)))
}

/// Appends the case checksum to a 15-character id.
pub fn to18(id15: &str) -> String {
    let bytes = id15.as_bytes();
    let mut id = String::with_capacity(18);
    id.push_str(id15);
    for chunk in bytes.chunks(5).take(3) {
        let flags = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        id.push(char::from(CHECKSUM[flags]));
    }
    id
}

/// The canonical 18-character form of a 15- or 18-character id; `None` when it is not one
/// (wrong length, a character outside `0-9A-Za-z`, or a checksum that does not match).
pub fn normalize(id: &str) -> Option<String> {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match id.len() {
        15 => Some(to18(id)),
        18 => {
            // Restore the letter case of the first 15 from the checksum, then check it.
            let (head, suffix) = id.split_at(15);
            let mut restored = String::with_capacity(15);
            for (chunk, flag) in head.as_bytes().chunks(5).zip(suffix.bytes()) {
                let flags = CHECKSUM.iter().position(|&c| c == flag.to_ascii_uppercase())?;
                for (i, b) in chunk.iter().enumerate() {
                    let upper = flags & (1 << i) != 0;
                    restored.push(char::from(if upper {
                        b.to_ascii_uppercase()
                    } else {
                        b.to_ascii_lowercase()
                    }));
                }
            }
            let canonical = to18(&restored);
            canonical[15..].eq_ignore_ascii_case(suffix).then_some(canonical)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_documented_example() {
        assert_eq!(to18("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert_eq!(normalize("001A0000006Vm9r").as_deref(), Some("001A0000006Vm9rIAC"));
        assert_eq!(normalize("001a0000006vm9riac").as_deref(), Some("001A0000006Vm9rIAC"));
        assert_eq!(normalize("001A0000006Vm9rIAC").as_deref(), Some("001A0000006Vm9rIAC"));
        assert_eq!(normalize("001A0000006Vm9rIAD"), None, "bad checksum");
        assert_eq!(normalize("001A0000006Vm9"), None);
        assert_eq!(normalize("001A0000006Vm9r!AC"), None);
    }

    #[test]
    fn made_ids_sort_in_creation_order_and_normalize_to_themselves() {
        let p = pod("sforg-acme");
        let ids: Vec<String> = [0, 1, 61, 62, 1_000_000]
            .iter()
            .map(|&n| make(CONTACT_PREFIX, &p, n))
            .collect();
        assert!(ids.windows(2).all(|w| w[0][..15] < w[1][..15]));
        for id in &ids {
            assert_eq!(id.len(), 18);
            assert!(id.starts_with("003"));
            assert_eq!(normalize(id).as_deref(), Some(id.as_str()));
            assert_eq!(normalize(&id[..15]).as_deref(), Some(id.as_str()));
        }
    }
}

//! Generated address books: messy in the documented proportions, identical for a seed.

use std::collections::{HashMap, HashSet};

use crmsync_sim::address_book;
use crmsync_sim::generate::{
    AT_LIMIT, BLANK_FIRST_EMAIL, DUPLICATE_EMAIL, INVALID_EMAIL, MESSY_EMAIL, MISSING_NAME, NO_EMAIL, OVERLONG,
    PADDED_NAME, quota,
};
use serde_json::Value;

use crate::{client, config, start, tenant};

const LIST_FIELDS: &[&str] = &[
    "emails",
    "phone_numbers",
    "im_addresses",
    "physical_addresses",
    "web_pages",
    "groups",
];

fn email_strings(c: &Value) -> Vec<String> {
    c["emails"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["email"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn first_usable(c: &Value) -> Option<String> {
    email_strings(c).into_iter().find(|e| !e.trim().is_empty())
}

fn plausible(s: &str) -> bool {
    let parts: Vec<&str> = s.split('@').collect();
    !s.chars().any(char::is_whitespace)
        && parts.len() == 2
        && !parts[0].is_empty()
        && parts[1].contains('.')
        && s.chars().count() <= 100
}

fn chars(c: &Value, field: &str) -> usize {
    c[field].as_str().map(|s| s.chars().count()).unwrap_or(0)
}

fn blank(c: &Value, field: &str) -> bool {
    c.get(field).and_then(Value::as_str).is_none_or(|s| s.trim().is_empty())
}

/// Which overlong value a contact has, if any.
fn overlong(c: &Value) -> Option<&'static str> {
    if chars(c, "company_name") > 200 {
        Some("company_name")
    } else if chars(c, "job_title") > 100 {
        Some("job_title")
    } else if chars(c, "given_name") > 40 {
        Some("given_name")
    } else if chars(c, "surname") > 80 {
        Some("surname")
    } else if c["phone_numbers"].as_array().is_some_and(|a| {
        a.iter()
            .any(|p| p["number"].as_str().is_some_and(|n| n.chars().count() > 30))
    }) {
        Some("phone")
    } else if email_strings(c).iter().any(|e| e.chars().count() > 100) {
        Some("email")
    } else {
        None
    }
}

#[tokio::test]
async fn address_books_are_identical_for_the_same_seed_and_served_as_generated() {
    let t = tenant("acme", 500);
    assert_eq!(address_book(&t, 42), address_book(&t, 42));
    assert_ne!(address_book(&t, 42), address_book(&t, 43));
    let mut other_grant = tenant("globex", 500);
    other_grant.contact_seed = None;
    assert_ne!(address_book(&t, 42), address_book(&other_grant, 42));
    let mut pinned = t.clone();
    pinned.contact_seed = Some(9);
    assert_eq!(
        address_book(&pinned, 42),
        address_book(&pinned, 1),
        "contact_seed overrides the seed"
    );

    let sim = start(config(vec![t.clone()])).await;
    let served: Value = client()
        .get(format!("{}/_sim/nylas/grant-acme/contacts", sim.base_url()))
        .send()
        .await
        .expect("book")
        .json()
        .await
        .expect("json");
    assert_eq!(served, Value::Array(address_book(&t, 42)));
}

#[test]
fn address_book_is_messy_in_the_documented_proportions() {
    let n = 3000;
    let t = tenant("acme", n);
    let book = address_book(&t, 42);
    assert_eq!(book.len(), n);

    // Shape: every contact has the Contact fields; lists are null or arrays.
    let ids: HashSet<&str> = book.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), n, "ids are unique");
    assert!(
        ids.iter()
            .all(|id| id.len() >= 20 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    );
    for c in &book {
        assert_eq!(c["object"], "contact");
        assert_eq!(c["grant_id"], "grant-acme");
        assert!(c["source"].is_string());
        for f in LIST_FIELDS {
            assert!(c[*f].is_null() || c[*f].is_array(), "{f} of {c}");
        }
    }
    for f in LIST_FIELDS {
        assert!(book.iter().any(|c| c[*f].is_null()), "{f} is sometimes null");
        assert!(
            book.iter().any(|c| c[*f].as_array().is_some_and(Vec::is_empty)),
            "{f} is sometimes []"
        );
        assert!(
            book.iter().any(|c| c[*f].as_array().is_some_and(|a| !a.is_empty())),
            "{f} is sometimes filled"
        );
    }
    for f in [
        "middle_name",
        "nickname",
        "birthday",
        "notes",
        "picture_url",
        "company_name",
    ] {
        assert!(book.iter().any(|c| c.get(f).is_none()), "{f} is sometimes absent");
        assert!(
            book.iter().any(|c| c.get(f).is_some_and(Value::is_null)),
            "{f} is sometimes null"
        );
        assert!(
            book.iter().any(|c| c[f].as_str().is_some_and(|s| !s.is_empty())),
            "{f} is sometimes set"
        );
    }

    // No usable email: null, [], or only blank entries.
    let no_email: Vec<&Value> = book.iter().filter(|c| first_usable(c).is_none()).collect();
    assert_eq!(no_email.len(), quota(n, NO_EMAIL));
    assert!(no_email.iter().any(|c| c["emails"].is_null()));
    assert!(
        no_email
            .iter()
            .any(|c| c["emails"].as_array().is_some_and(Vec::is_empty))
    );
    assert!(
        no_email
            .iter()
            .any(|c| c["emails"].as_array().is_some_and(|a| !a.is_empty()))
    );

    // First entry blank, a later one valid.
    let blank_first = book
        .iter()
        .filter(|c| {
            let e = email_strings(c);
            e.len() > 1 && e[0].trim().is_empty() && e[1..].iter().any(|x| plausible(x.trim()))
        })
        .count();
    assert_eq!(blank_first, quota(n, BLANK_FIRST_EMAIL));

    // Invalid (not overlong) emails.
    let invalid = book
        .iter()
        .filter_map(first_usable)
        .filter(|e| e.chars().count() <= 100 && !plausible(e.trim()))
        .count();
    assert_eq!(invalid, quota(n, INVALID_EMAIL));

    // Duplicates: each adds one contact to a group sharing a trimmed, lowercased email.
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, c) in book.iter().enumerate() {
        if let Some(e) = first_usable(c) {
            groups.entry(e.trim().to_lowercase()).or_default().push(i);
        }
    }
    let extra: usize = groups.values().map(|g| g.len() - 1).sum();
    assert_eq!(extra, quota(n, DUPLICATE_EMAIL));
    let shared: Vec<&Vec<usize>> = groups.values().filter(|g| g.len() > 1).collect();
    assert!(
        shared.iter().any(|g| g[g.len() - 1] - g[0] <= 5),
        "some duplicates are on the same page"
    );
    assert!(
        shared.iter().any(|g| g[g.len() - 1] - g[0] >= 300),
        "some duplicates are far apart"
    );
    assert!(
        shared
            .iter()
            .any(|g| first_usable(&book[g[0]]) != first_usable(&book[g[1]])),
        "some duplicates differ in case or whitespace"
    );

    // Uppercase and/or surrounding whitespace.
    let messy = book
        .iter()
        .filter_map(first_usable)
        .filter(|e| *e != e.trim().to_lowercase())
        .count();
    assert!(
        (quota(n, MESSY_EMAIL)..=quota(n, MESSY_EMAIL) + quota(n, DUPLICATE_EMAIL)).contains(&messy),
        "{messy} messy emails"
    );
    assert!(book.iter().filter_map(first_usable).any(|e| e != e.trim()));
    assert!(
        book.iter()
            .filter_map(first_usable)
            .any(|e| e.trim() != e.trim().to_lowercase())
    );

    // Names.
    let missing = book
        .iter()
        .filter(|c| blank(c, "given_name") || blank(c, "surname"))
        .count();
    assert_eq!(missing, quota(n, MISSING_NAME));
    assert!(
        book.iter()
            .any(|c| blank(c, "given_name") && blank(c, "surname") && !blank(c, "display_name"))
    );
    assert!(
        book.iter()
            .any(|c| blank(c, "given_name") && blank(c, "surname") && blank(c, "display_name"))
    );
    let padded = book
        .iter()
        .filter(|c| {
            ["given_name", "surname"]
                .iter()
                .any(|f| c[*f].as_str().is_some_and(|s| s != s.trim()))
        })
        .count();
    assert_eq!(padded, quota(n, PADDED_NAME));
    let names: Vec<String> = book
        .iter()
        .flat_map(|c| [c["given_name"].as_str(), c["surname"].as_str()])
        .flatten()
        .map(String::from)
        .collect();
    let non_ascii = names.iter().filter(|s| !s.is_ascii()).count();
    assert!(
        non_ascii * 10 > names.len(),
        "{non_ascii} of {} names are not ASCII",
        names.len()
    );
    assert!(
        names
            .iter()
            .any(|s| s.chars().any(|ch| ('\u{4e00}'..='\u{9fff}').contains(&ch))),
        "CJK"
    );
    assert!(names.iter().any(|s| s.chars().any(|ch| ch >= '\u{1f300}')), "emoji");
    assert!(
        names
            .iter()
            .any(|s| s.chars().any(|ch| matches!(ch, 'é' | 'ë' | 'ö' | 'ü' | 'ç'))),
        "accents"
    );

    // Overlong values, each kind present.
    let kinds: Vec<&str> = book.iter().filter_map(overlong).collect();
    assert_eq!(kinds.len(), quota(n, OVERLONG));
    for kind in ["company_name", "job_title", "given_name", "surname", "phone", "email"] {
        assert!(kinds.contains(&kind), "an overlong {kind}");
    }
    // At the limit in characters but longer in bytes.
    let at_limit = book
        .iter()
        .filter(|c| {
            [
                ("given_name", 40),
                ("surname", 80),
                ("company_name", 200),
                ("job_title", 100),
            ]
            .iter()
            .any(|(f, max)| {
                c[*f]
                    .as_str()
                    .is_some_and(|s| s.chars().count() == *max && s.len() > *max)
            })
        })
        .count();
    assert_eq!(at_limit, quota(n, AT_LIMIT));

    // Phone numbers in various formats.
    let shapes: HashSet<String> = book
        .iter()
        .filter_map(|c| c["phone_numbers"].as_array())
        .flatten()
        .filter_map(|p| p["number"].as_str())
        .map(|p| p.chars().map(|ch| if ch.is_ascii_digit() { '9' } else { ch }).collect())
        .collect();
    assert!(shapes.len() >= 8, "{shapes:?}");
}

//! Seeded, deliberately messy Nylas address books.
//!
//! Every contact carries the fields of the Nylas v3 Contact object (`id`, `grant_id`,
//! `object: "contact"`, `source`, `display_name`, `given_name`, `middle_name`, `surname`,
//! `suffix`, `nickname`, `birthday`, `company_name`, `job_title`, `manager_name`,
//! `office_location`, `notes`, `picture_url`, `emails`, `phone_numbers`, `im_addresses`,
//! `physical_addresses`, `web_pages`, `groups`); optional strings are absent, `null` or `""`,
//! and lists are `null`, `[]` or filled.
//!
//! The quirks below are allotted by quota, not by coin flip: for a book of `n` contacts,
//! exactly `quota(n, RATE)` contacts (`round(n × RATE)`) get each quirk, chosen by a seeded
//! shuffle. The same seed and size always give the byte-identical book.
//!
//! Mutually exclusive email quirks (one per contact at most):
//! - [`NO_EMAIL`] 5 %: no usable email; cycling through `emails: null`, `emails: []`, and
//!   only blank entries (`""` or whitespace).
//! - [`DUPLICATE_EMAIL`] 3 %: the first email repeats another contact's; alternately a
//!   near neighbour (≤ 5 positions away, so usually the same page) and a far one (≥ 300 away
//!   when the book allows); cycling through an exact copy, different letter case, and
//!   surrounding whitespace plus different case. Every duplicate adds exactly one contact to
//!   a group of contacts sharing a (trimmed, lowercased) email.
//! - [`BLANK_FIRST_EMAIL`] 1 %: `emails[0]` is blank and `emails[1]` is valid.
//! - [`INVALID_EMAIL`] 0.5 %: the only email is implausible: no `@`, a space inside, or no `.`
//!   in the domain.
//! - [`OVERLONG`] 1 %: one value longer than Zoho allows (in characters), cycling through
//!   `company_name` > 200, `job_title` > 100, `given_name` > 40, `surname` > 80, a phone > 30
//!   and an email > 100.
//! - [`AT_LIMIT`] 0.5 %: one value exactly at Zoho's limit in characters but longer in bytes
//!   (multibyte letters), cycling through `given_name` 40, `surname` 80, `company_name` 200,
//!   `job_title` 100: valid, and a trap for code that counts bytes.
//!
//! Independent quirks:
//! - [`MESSY_EMAIL`] 15 % (of the book, chosen among contacts whose first usable email is
//!   their own valid address): uppercase letters, surrounding whitespace, or both.
//!   Duplicates add their own case/whitespace variants on top.
//! - [`MISSING_NAME`] 10 % (among contacts without an overlong or at-limit value): cycling
//!   through no `given_name`; no `surname`; neither but a `display_name`; neither and no
//!   `display_name`.
//! - [`PADDED_NAME`] 3 % (among contacts with both names): whitespace around `given_name`
//!   and/or `surname`.
//! - Names and companies come from pools where about a third of the entries are not ASCII
//!   (accents, Cyrillic, Arabic, CJK, Hangul, emoji).
//! - Phone numbers mix formats: E.164, dashes, dots, parentheses, extensions, `tel:` URIs,
//!   surrounding whitespace.
//!
//! Ids are 25 lowercase alphanumerics, unique per book; all other emails are unique per book
//! (they embed the contact's position), so the only shared emails are the duplicates above.

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom as _, SliceRandom as _};
use rand::{Rng, SeedableRng as _};
use serde_json::{Map, Value, json};

use crate::clock::derive_seed;
use crate::config::TenantConfig;

/// Share of contacts without a usable email.
pub const NO_EMAIL: f64 = 0.05;
/// Share of contacts whose first email repeats another contact's.
pub const DUPLICATE_EMAIL: f64 = 0.03;
/// Share of contacts whose first email entry is blank and the second valid.
pub const BLANK_FIRST_EMAIL: f64 = 0.01;
/// Share of contacts whose only email is implausible.
pub const INVALID_EMAIL: f64 = 0.005;
/// Share of contacts with one value over Zoho's length limit.
pub const OVERLONG: f64 = 0.01;
/// Share of contacts with one value exactly at Zoho's limit in characters (multibyte).
pub const AT_LIMIT: f64 = 0.005;
/// Share of contacts whose first email has uppercase letters and/or surrounding whitespace.
pub const MESSY_EMAIL: f64 = 0.15;
/// Share of contacts missing `given_name` and/or `surname`.
pub const MISSING_NAME: f64 = 0.10;
/// Share of contacts with whitespace around a name.
pub const PADDED_NAME: f64 = 0.03;

/// How many contacts of a book of `n` get a quirk of the given rate: `round(n × rate)`.
pub fn quota(n: usize, rate: f64) -> usize {
    (n as f64 * rate).round() as usize
}

/// The seed of a tenant's address book: its `contact_seed`, or one derived from the
/// simulator seed and the grant id.
pub fn contact_seed(tenant: &TenantConfig, seed: u64) -> u64 {
    tenant
        .contact_seed
        .unwrap_or_else(|| derive_seed(seed, &format!("contacts/{}", tenant.grant_id)))
}

/// The generated Nylas contacts of a tenant, exactly as the API serves them, in page order.
pub fn address_book(tenant: &TenantConfig, seed: u64) -> Vec<Value> {
    generate(&tenant.grant_id, tenant.contacts, contact_seed(tenant, seed))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EmailQuirk {
    Normal,
    NoEmail(usize),
    Duplicate(usize),
    BlankFirst(usize),
    Invalid(usize),
    Overlong(usize),
    AtLimit(usize),
}

const OVERLONG_KINDS: usize = 6;
const OVERLONG_EMAIL_KIND: usize = 5;
const AT_LIMIT_KINDS: usize = 4;

/// Quirk plan of a book: which contact gets what.
struct Plan {
    email: Vec<EmailQuirk>,
    messy_email: Vec<bool>,
    missing_name: Vec<Option<usize>>,
    padded_name: Vec<bool>,
}

fn plan(n: usize, rng: &mut StdRng) -> Plan {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut email = vec![EmailQuirk::Normal; n];
    let mut next = 0;
    let mut allot = |rate: f64, make: fn(usize) -> EmailQuirk, email: &mut Vec<EmailQuirk>| {
        for ordinal in 0..quota(n, rate) {
            if let Some(&i) = order.get(next) {
                email[i] = make(ordinal);
                next += 1;
            }
        }
    };
    allot(NO_EMAIL, EmailQuirk::NoEmail, &mut email);
    allot(DUPLICATE_EMAIL, EmailQuirk::Duplicate, &mut email);
    allot(BLANK_FIRST_EMAIL, EmailQuirk::BlankFirst, &mut email);
    allot(INVALID_EMAIL, EmailQuirk::Invalid, &mut email);
    allot(OVERLONG, EmailQuirk::Overlong, &mut email);
    allot(AT_LIMIT, EmailQuirk::AtLimit, &mut email);

    let pick = |eligible: Vec<usize>, count: usize, rng: &mut StdRng| -> Vec<usize> {
        let mut eligible = eligible;
        eligible.shuffle(rng);
        eligible.truncate(count);
        eligible
    };

    let own_valid_email = |q: &EmailQuirk| match q {
        EmailQuirk::Normal | EmailQuirk::BlankFirst(_) | EmailQuirk::AtLimit(_) => true,
        EmailQuirk::Overlong(k) => k % OVERLONG_KINDS != OVERLONG_EMAIL_KIND,
        _ => false,
    };
    let mut messy_email = vec![false; n];
    let eligible: Vec<usize> = (0..n).filter(|&i| own_valid_email(&email[i])).collect();
    for i in pick(eligible, quota(n, MESSY_EMAIL), rng) {
        messy_email[i] = true;
    }

    let mut missing_name = vec![None; n];
    let eligible: Vec<usize> = (0..n)
        .filter(|&i| !matches!(email[i], EmailQuirk::Overlong(_) | EmailQuirk::AtLimit(_)))
        .collect();
    for (ordinal, i) in pick(eligible, quota(n, MISSING_NAME), rng).into_iter().enumerate() {
        missing_name[i] = Some(ordinal);
    }

    let mut padded_name = vec![false; n];
    let eligible: Vec<usize> = (0..n)
        .filter(|&i| missing_name[i].is_none() && !matches!(email[i], EmailQuirk::Overlong(_) | EmailQuirk::AtLimit(_)))
        .collect();
    for i in pick(eligible, quota(n, PADDED_NAME), rng) {
        padded_name[i] = true;
    }

    Plan {
        email,
        messy_email,
        missing_name,
        padded_name,
    }
}

/// Generates `n` contacts of `grant_id` from `seed`.
pub fn generate(grant_id: &str, n: usize, seed: u64) -> Vec<Value> {
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = plan(n, &mut rng);
    let mut ids = HashSet::with_capacity(n);
    let mut contacts: Vec<Map<String, Value>> = Vec::with_capacity(n);
    // The valid, normalized first email of each contact, for duplicates to copy.
    let mut base_emails: Vec<Option<String>> = Vec::with_capacity(n);
    for i in 0..n {
        let id = loop {
            let id = random_id(&mut rng);
            if ids.insert(id.clone()) {
                break id;
            }
        };
        let (contact, base) = contact(&mut rng, grant_id, id, i, &plan, None);
        contacts.push(contact);
        base_emails.push(base);
    }
    link_duplicates(&mut rng, &mut contacts, &base_emails, &plan);
    contacts.into_iter().map(Value::Object).collect()
}

/// A contact created at run time (by a mutation plan): as messy as the generated ones
/// (missing or padded names, odd phones, non-ASCII text, `null`/`""`/absent optionals), but
/// always with a plausible email, unique in the book because it embeds `serial` (a per-book
/// counter) after an `_`; its case may be mixed.
pub fn created_contact(rng: &mut StdRng, grant_id: &str, id: String, serial: u64) -> Value {
    let plan = Plan {
        email: vec![EmailQuirk::Normal],
        messy_email: vec![false],
        missing_name: vec![rng.random_bool(MISSING_NAME).then(|| rng.random_range(0..4))],
        padded_name: vec![rng.random_bool(PADDED_NAME)],
    };
    let (mut c, _) = contact(rng, grant_id, id, 0, &plan, Some(serial));
    if rng.random_bool(MESSY_EMAIL)
        && let Some(Value::Object(first)) = c.get_mut("emails").and_then(|e| e.get_mut(0))
        && let Some(Value::String(email)) = first.get_mut("email")
    {
        *email = capitalize_parts(email);
    }
    Value::Object(c)
}

/// A fresh email for a contact created or changed at run time: unique in the book (see
/// [`created_contact`]) and plausible.
pub fn fresh_email(rng: &mut StdRng, serial: u64) -> String {
    let (_, given) = *GIVEN.choose(rng).unwrap_or(&("John", "john"));
    let (_, surname) = *SURNAMES.choose(rng).unwrap_or(&("Miller", "miller"));
    created_email(given, surname, serial, pick(rng, DOMAINS))
}

fn created_email(given_handle: &str, surname_handle: &str, serial: u64, domain: &str) -> String {
    format!("{given_handle}_{surname_handle}.{serial}@{domain}")
}

/// Fresh values for the fields an update changes: names (and `display_name` to match),
/// `company_name`, `job_title`, `phone_numbers`. Each is a messy value as generated, or
/// (for the optional ones) missing.
pub fn fresh_fields(rng: &mut StdRng) -> Map<String, Value> {
    let mut m = Map::new();
    let (given, _) = *GIVEN.choose(rng).unwrap_or(&("John", "john"));
    let (surname, _) = *SURNAMES.choose(rng).unwrap_or(&("Miller", "miller"));
    let padded = rng.random_bool(0.1);
    let pad = |s: &str| if padded { format!(" {s} ") } else { s.to_string() };
    m.insert("given_name".into(), json!(pad(given)));
    m.insert("surname".into(), json!(pad(surname)));
    m.insert("display_name".into(), json!(format!("{given} {surname}")));
    let company = maybe(rng, 0.8, |r| pick(r, COMPANIES).to_string());
    m.insert("company_name".into(), company.map_or(Value::Null, Value::String));
    let title = maybe(rng, 0.8, |r| pick(r, TITLES).to_string());
    m.insert("job_title".into(), title.map_or(Value::Null, Value::String));
    let phones: Vec<Value> = (0..rng.random_range(0..3))
        .map(|_| json!({"number": phone(rng), "type": pick(rng, &["work", "home", "mobile", "other"])}))
        .collect();
    m.insert("phone_numbers".into(), Value::Array(phones));
    m
}

/// A fresh contact id: 25 lowercase alphanumerics, as generated ones.
pub fn fresh_id(rng: &mut StdRng) -> String {
    random_id(rng)
}

fn random_id(rng: &mut StdRng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..25)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

/// (display form, ASCII handle for email addresses)
const GIVEN: &[(&str, &str)] = &[
    ("John", "john"),
    ("Mary", "mary"),
    ("Leyah", "leyah"),
    ("Michael", "michael"),
    ("Sarah", "sarah"),
    ("David", "david"),
    ("Emma", "emma"),
    ("Olivia", "olivia"),
    ("James", "james"),
    ("Priya", "priya"),
    ("Aisha", "aisha"),
    ("Carlos", "carlos"),
    ("Anna", "anna"),
    ("Tom", "tom"),
    ("Grace", "grace"),
    ("Liam", "liam"),
    ("Noah", "noah"),
    ("Chloe", "chloe"),
    ("José", "jose"),
    ("Zoë", "zoe"),
    ("François", "francois"),
    ("Björn", "bjorn"),
    ("Siobhán", "siobhan"),
    ("Łukasz", "lukasz"),
    ("Ngọc", "ngoc"),
    ("Søren", "soren"),
    ("Ana María", "anamaria"),
    ("Дмитрий", "dmitri"),
    ("محمد", "mohammed"),
    ("太郎", "taro"),
    ("美咲", "misaki"),
    ("伟", "wei"),
    ("민준", "minjun"),
    ("Sunny ☀️", "sunny"),
    ("Rocket 🚀", "rocket"),
];

const SURNAMES: &[(&str, &str)] = &[
    ("Miller", "miller"),
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("Brown", "brown"),
    ("Williams", "williams"),
    ("Jones", "jones"),
    ("Taylor", "taylor"),
    ("Patel", "patel"),
    ("Lee", "lee"),
    ("Khan", "khan"),
    ("Rossi", "rossi"),
    ("O'Brien", "obrien"),
    ("Smith-Jones", "smithjones"),
    ("de la Cruz", "delacruz"),
    ("van der Berg", "vanderberg"),
    ("Anderson", "anderson"),
    ("Clark", "clark"),
    ("Müller", "muller"),
    ("García", "garcia"),
    ("Nguyễn", "nguyen"),
    ("Øster", "oster"),
    ("Kowalczyk-Wiśniewska", "kowalczyk"),
    ("Иванов", "ivanov"),
    ("الهاشمي", "alhashimi"),
    ("山田", "yamada"),
    ("王", "wang"),
    ("김", "kim"),
    ("Doe 🎉", "doe"),
];

const MIDDLE: &[&str] = &["A.", "Marie", "J", "Lou", "Ömer", "van", "de"];
const SUFFIXES: &[&str] = &["Jr.", "Sr.", "III", "PhD", "MD", "Esq."];
const NICKNAMES: &[&str] = &["Johnny", "Bibi", "Doc", "Kiki", "Boss", "Ace", "たろう"];

const COMPANIES: &[&str] = &[
    "Nylas",
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Corporation",
    "Stark Industries",
    "Wayne Enterprises",
    "Hooli",
    "Pied Piper",
    "Vandelay Industries",
    "Soylent Corp.",
    "Société Générale de Test",
    "Müller & Söhne GmbH",
    "株式会社サンプル",
    "Ωmega Λabs",
    "Café Olé S.A.",
    "  Padded Inc.  ",
    "acme corp",
];

const TITLES: &[&str] = &[
    "Software Engineer",
    "CEO",
    "VP Sales",
    "Account Executive",
    "Head of Growth",
    "Directeur général",
    "営業部長",
    "Office Manager",
    "CTO & Co-founder",
    "Intern",
    "Senior Staff Engineer, Platform",
];

const DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "acme.io",
    "globex.example",
    "mail.example.co.uk",
    "initech.test",
    "gmail.example",
    "outlook.example",
];

const CITIES: &[(&str, &str, &str)] = &[
    ("San Francisco", "CA", "US"),
    ("New York", "NY", "US"),
    ("London", "", "GB"),
    ("München", "BY", "DE"),
    ("東京", "", "JP"),
    ("Montréal", "QC", "CA"),
    ("São Paulo", "SP", "BR"),
];

/// Inserts an optional string: present, or (when absent) missing, `null` or `""`.
fn put_opt(rng: &mut StdRng, c: &mut Map<String, Value>, key: &str, value: Option<String>) {
    match value {
        Some(v) => {
            c.insert(key.to_string(), Value::String(v));
        }
        None => put_missing(rng, c, key),
    }
}

/// A missing string: the key absent (60 %), `null` (25 %) or `""` (15 %).
fn put_missing(rng: &mut StdRng, c: &mut Map<String, Value>, key: &str) {
    let roll = rng.random_range(0..100);
    if roll < 60 {
        c.remove(key);
    } else if roll < 85 {
        c.insert(key.to_string(), Value::Null);
    } else {
        c.insert(key.to_string(), Value::String(String::new()));
    }
}

/// An empty list: `null` or `[]`.
fn empty_list(rng: &mut StdRng) -> Value {
    if rng.random_bool(0.5) { Value::Null } else { json!([]) }
}

fn maybe<T>(rng: &mut StdRng, p: f64, f: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    if rng.random_bool(p) { Some(f(rng)) } else { None }
}

fn pick<'a>(rng: &mut StdRng, items: &'a [&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or_default()
}

fn digits(rng: &mut StdRng, n: usize) -> String {
    (0..n).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

fn phone(rng: &mut StdRng) -> String {
    match rng.random_range(0..11) {
        0 => format!("+1-555-{}-{}", digits(rng, 3), digits(rng, 4)),
        1 => format!("(555) {}-{}", digits(rng, 3), digits(rng, 4)),
        2 => format!("555.{}.{}", digits(rng, 3), digits(rng, 4)),
        3 => format!("+44 20 7946 {}", digits(rng, 4)),
        4 => format!("+1555{}", digits(rng, 7)),
        5 => format!("+49 (0)30 {} {}", digits(rng, 4), digits(rng, 4)),
        6 => format!("  +1 555 {} {}  ", digits(rng, 3), digits(rng, 4)),
        7 => format!("+1 555 {} {} ext. {}", digits(rng, 3), digits(rng, 4), digits(rng, 3)),
        8 => format!("tel:+1555{}", digits(rng, 7)),
        9 => format!("+81-3-{}-{}", digits(rng, 4), digits(rng, 4)),
        _ => format!("0{}", digits(rng, 10)),
    }
}

fn email_type(rng: &mut StdRng) -> &'static str {
    ["work", "home", "other"].choose(rng).copied().unwrap_or("work")
}

/// A value of exactly `len` characters mixing multibyte letters, so its UTF-8 length is
/// about twice that.
fn multibyte_exact(prefix: &str, len: usize) -> String {
    let mut s: String = prefix.chars().take(len).collect();
    let filler = ['é', 'ø', 'ü', 'ñ', 'ß', 'å'];
    let mut k = 0;
    while s.chars().count() < len {
        s.push(filler[k % filler.len()]);
        k += 1;
    }
    s
}

fn long_text(base: &str, min_len: usize) -> String {
    let mut s = String::from(base);
    let mut k = 1;
    while s.chars().count() <= min_len {
        s.push_str(&format!(" {base} {k}"));
        k += 1;
    }
    s
}

/// Builds contact `i`; returns it and its own valid, normalized first email (if any).
///
/// `created` is the serial of a contact created at run time (see [`created_contact`]): its
/// emails then embed the serial after an `_`, which generated emails never contain, so they
/// are unique in the book.
fn contact(
    rng: &mut StdRng,
    grant_id: &str,
    id: String,
    i: usize,
    plan: &Plan,
    created: Option<u64>,
) -> (Map<String, Value>, Option<String>) {
    let mut c = Map::new();
    c.insert("id".into(), json!(id));
    c.insert("grant_id".into(), json!(grant_id));
    c.insert("object".into(), json!("contact"));
    let source = match rng.random_range(0..100) {
        0..90 => "address_book",
        90..97 => "inbox",
        _ => "domain",
    };
    c.insert("source".into(), json!(source));

    let (given, given_handle) = *GIVEN.choose(rng).unwrap_or(&("John", "john"));
    let (surname, surname_handle) = *SURNAMES.choose(rng).unwrap_or(&("Miller", "miller"));
    let mut given = Some(given.to_string());
    let mut surname = Some(surname.to_string());
    let quirk = plan.email[i];

    let mut company = maybe(rng, 0.7, |r| pick(r, COMPANIES).to_string());
    let mut title = maybe(rng, 0.6, |r| pick(r, TITLES).to_string());
    let mut phones: Vec<String> = (0..rng.random_range(0..3)).map(|_| phone(rng)).collect();

    match quirk {
        EmailQuirk::Overlong(k) => match k % OVERLONG_KINDS {
            0 => company = Some(long_text("Extremely Long Holding Company Name International", 200)),
            1 => title = Some(long_text("Senior Principal Vice President of Everything", 100)),
            2 => given = Some(long_text("Maximiliana-Alexandra", 40)),
            3 => surname = Some(long_text("Wolfeschlegelsteinhausenbergerdorff", 80)),
            4 => phones.insert(
                0,
                format!(
                    "+1 (555) {}-{} ext. 12345 ask for reception",
                    digits(rng, 3),
                    digits(rng, 4)
                ),
            ),
            _ => {}
        },
        EmailQuirk::AtLimit(k) => match k % AT_LIMIT_KINDS {
            0 => given = Some(multibyte_exact("Zoë", 40)),
            1 => surname = Some(multibyte_exact("Müller", 80)),
            2 => company = Some(multibyte_exact("Société ", 200)),
            _ => title = Some(multibyte_exact("Directeur général ", 100)),
        },
        _ => {}
    }

    let mut display = match rng.random_range(0..10) {
        0 => None,
        1 => Some(format!(
            "{}, {}",
            surname.as_deref().unwrap_or(""),
            given.as_deref().unwrap_or("")
        )),
        _ => Some(format!(
            "{} {}",
            given.as_deref().unwrap_or(""),
            surname.as_deref().unwrap_or("")
        )),
    };
    if let Some(variant) = plan.missing_name[i] {
        match variant % 4 {
            0 => given = None,
            1 => surname = None,
            2 => {
                display = Some(format!(
                    "{} {}",
                    given.as_deref().unwrap_or(""),
                    surname.as_deref().unwrap_or("")
                ));
                given = None;
                surname = None;
            }
            _ => {
                given = None;
                surname = None;
                display = None;
            }
        }
    }
    if plan.padded_name[i] {
        match rng.random_range(0..3) {
            0 => given = given.map(|g| format!("  {g}")),
            1 => surname = surname.map(|s| format!("{s}  ")),
            _ => {
                given = given.map(|g| format!(" {g} "));
                surname = surname.map(|s| format!("\t{s} "));
            }
        }
    }
    put_opt(rng, &mut c, "display_name", display);
    put_opt(rng, &mut c, "given_name", given);
    let middle = maybe(rng, 0.3, |r| pick(r, MIDDLE).to_string());
    put_opt(rng, &mut c, "middle_name", middle);
    put_opt(rng, &mut c, "surname", surname);
    let suffix = maybe(rng, 0.05, |r| pick(r, SUFFIXES).to_string());
    put_opt(rng, &mut c, "suffix", suffix);
    let nickname = maybe(rng, 0.1, |r| pick(r, NICKNAMES).to_string());
    put_opt(rng, &mut c, "nickname", nickname);
    let birthday = maybe(rng, 0.2, |r| {
        format!(
            "{}-{:02}-{:02}",
            r.random_range(1940..2005),
            r.random_range(1..13),
            r.random_range(1..29)
        )
    });
    put_opt(rng, &mut c, "birthday", birthday);
    put_opt(rng, &mut c, "company_name", company);
    put_opt(rng, &mut c, "job_title", title);
    let manager = maybe(rng, 0.1, |r| {
        format!(
            "{} {}",
            pick(r, &["Ann", "Bob", "Chen", "Dana"]),
            pick(r, &["Lee", "Ruiz"])
        )
    });
    put_opt(rng, &mut c, "manager_name", manager);
    let office = maybe(rng, 0.1, |r| {
        format!("Building {}, floor {}", r.random_range(1..9), r.random_range(1..30))
    });
    put_opt(rng, &mut c, "office_location", office);
    let notes = maybe(rng, 0.15, |r| {
        pick(
            r,
            &[
                "Met at the conference.\nFollow up in Q3.",
                "Prefers \"email\" over phone; <b>VIP</b>",
                "Ünïcödé notes ✅",
                "",
            ],
        )
        .to_string()
    });
    put_opt(rng, &mut c, "notes", notes);
    let picture = maybe(rng, 0.3, |r| {
        format!("https://picture.example/contacts/{}.jpg", digits(r, 8))
    });
    put_opt(rng, &mut c, "picture_url", picture);

    // Emails. Local parts embed the position `i`, so they are unique within the book.
    let domain = pick(rng, DOMAINS);
    let own = match rng.random_range(0..4) {
        0 => format!("{given_handle}.{surname_handle}{i}@{domain}"),
        1 => format!("{given_handle}{i}@{domain}"),
        2 => format!("{}{surname_handle}{i}@{domain}", &given_handle[..1]),
        _ => format!("{surname_handle}.{given_handle}.{i}@{domain}"),
    };
    let own = match created {
        Some(serial) => created_email(given_handle, surname_handle, serial, domain),
        None => own,
    };
    let typ = email_type(rng);
    let shown = if plan.messy_email[i] {
        messy(rng, &own)
    } else {
        own.clone()
    };
    let mut base = Some(own.clone());
    let emails = match quirk {
        EmailQuirk::NoEmail(k) => {
            base = None;
            match k % 3 {
                0 => Value::Null,
                1 => json!([]),
                _ => {
                    let blank = if rng.random_bool(0.5) { "" } else { "   " };
                    json!([{"email": blank, "type": typ}])
                }
            }
        }
        EmailQuirk::Invalid(k) => {
            base = None;
            let bad = match k % 3 {
                0 => format!("{given_handle}.{surname_handle}{i}.{domain}"),
                1 => format!("{given_handle} {surname_handle}{i}@{domain}"),
                _ => format!("{given_handle}{i}@localhost"),
            };
            json!([{"email": bad, "type": typ}])
        }
        EmailQuirk::BlankFirst(_) => {
            let blank = if rng.random_bool(0.5) { "" } else { " " };
            json!([{"email": blank, "type": "other"}, {"email": shown, "type": typ}])
        }
        EmailQuirk::Overlong(k) if k % OVERLONG_KINDS == OVERLONG_EMAIL_KIND => {
            base = None;
            let long = format!("{}.{i}@{domain}", "verylonglocalpart".repeat(6));
            json!([{"email": long, "type": typ}])
        }
        _ => {
            let mut list = vec![json!({"email": shown, "type": typ})];
            if rng.random_bool(0.2) {
                let alt = match created {
                    Some(serial) => format!("{given_handle}_{serial}.alt@{}", pick(rng, DOMAINS)),
                    None => format!("{given_handle}{i}.alt@{}", pick(rng, DOMAINS)),
                };
                list.push(json!({"email": alt, "type": email_type(rng)}));
            }
            Value::Array(list)
        }
    };
    c.insert("emails".into(), emails);

    let phone_numbers = if phones.is_empty() {
        empty_list(rng)
    } else {
        Value::Array(
            phones
                .into_iter()
                .map(|p| json!({"number": p, "type": pick(rng, &["work", "home", "mobile", "other"])}))
                .collect(),
        )
    };
    c.insert("phone_numbers".into(), phone_numbers);

    let im = maybe(
        rng,
        0.1,
        |r| json!([{"type": pick(r, &["jabber", "skype", "aim"]), "im_address": format!("{given_handle}{i}@im.example")}]),
    );
    c.insert("im_addresses".into(), im.unwrap_or_else(|| empty_list(rng)));
    let addresses = maybe(rng, 0.2, |r| {
        let (city, state, country) = *CITIES.choose(r).unwrap_or(&CITIES[0]);
        json!([{
            "format": "structured",
            "street_address": format!("{} Main St", r.random_range(1..999)),
            "city": city,
            "postal_code": digits(r, 5),
            "state": state,
            "country": country,
            "type": pick(r, &["work", "home", "other"]),
        }])
    });
    c.insert(
        "physical_addresses".into(),
        addresses.unwrap_or_else(|| empty_list(rng)),
    );
    let web = maybe(
        rng,
        0.15,
        |r| json!([{"url": format!("https://{}.example/{given_handle}", pick(r, &["www", "blog", "linkedin"])), "type": pick(r, &["work", "homepage", "profile"])}]),
    );
    c.insert("web_pages".into(), web.unwrap_or_else(|| empty_list(rng)));
    let groups = maybe(rng, 0.5, |r| {
        Value::Array(
            (0..r.random_range(1..3))
                .map(|_| json!({"id": format!("group-{}", pick(r, &["friends", "coworkers", "family", "vip"]))}))
                .collect(),
        )
    });
    c.insert("groups".into(), groups.unwrap_or_else(|| empty_list(rng)));

    (c, base)
}

/// Uppercase letters and/or surrounding whitespace.
fn messy(rng: &mut StdRng, email: &str) -> String {
    match rng.random_range(0..3) {
        0 => capitalize_parts(email),
        1 => format!(
            "{}{email}{}",
            pick(rng, &[" ", "  ", "\t"]),
            pick(rng, &[" ", "", "\n"])
        ),
        _ => format!(" {} ", email.to_uppercase()),
    }
}

/// `john.doe@example.com` → `John.Doe@Example.com`.
fn capitalize_parts(email: &str) -> String {
    let mut out = String::with_capacity(email.len());
    let mut start = true;
    for ch in email.chars() {
        if start && ch.is_ascii_alphabetic() {
            out.push(ch.to_ascii_uppercase());
        } else {
            out.push(ch);
        }
        start = matches!(ch, '.' | '@');
    }
    out
}

/// Gives every duplicate contact the email of another (normal) contact.
fn link_duplicates(rng: &mut StdRng, contacts: &mut [Map<String, Value>], base: &[Option<String>], plan: &Plan) {
    let n = contacts.len();
    let is_target = |j: usize| plan.email[j] == EmailQuirk::Normal && base[j].is_some();
    let targets: Vec<usize> = (0..n).filter(|&j| is_target(j)).collect();
    if targets.is_empty() {
        return;
    }
    for (i, quirk) in plan.email.iter().enumerate() {
        let EmailQuirk::Duplicate(k) = *quirk else {
            continue;
        };
        let near = k % 2 == 0;
        let mut target = None;
        if near {
            target = (1..=5)
                .flat_map(|d| [i.checked_sub(d), Some(i + d)])
                .flatten()
                .find(|&j| j < n && is_target(j));
        } else {
            for _ in 0..50 {
                let j = targets[rng.random_range(0..targets.len())];
                if i.abs_diff(j) >= 300 {
                    target = Some(j);
                    break;
                }
            }
        }
        let j = target.unwrap_or_else(|| targets[rng.random_range(0..targets.len())]);
        let Some(email) = base[j].clone() else {
            continue;
        };
        let shown = match (k / 2) % 3 {
            0 => email,
            1 => capitalize_parts(&email),
            _ => format!("  {}", email.to_uppercase()),
        };
        let typ = email_type(rng);
        contacts[i].insert("emails".into(), json!([{"email": shown, "type": typ}]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_book_and_different_seed_different_book() {
        let a = generate("g", 500, 7);
        assert_eq!(a, generate("g", 500, 7));
        assert_ne!(a, generate("g", 500, 8));
    }

    #[test]
    fn ids_are_unique_opaque_lowercase_alphanumerics() {
        let book = generate("g", 2000, 1);
        let ids: HashSet<&str> = book.iter().filter_map(|c| c["id"].as_str()).collect();
        assert_eq!(ids.len(), 2000);
        assert!(
            ids.iter()
                .all(|id| id.len() >= 20 && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        );
    }

    #[test]
    fn at_limit_values_are_exact_in_chars_and_longer_in_bytes() {
        let s = multibyte_exact("Zoë", 40);
        assert_eq!(s.chars().count(), 40);
        assert!(s.len() > 40);
    }

    #[test]
    fn tiny_books_work() {
        assert!(generate("g", 0, 1).is_empty());
        assert_eq!(generate("g", 1, 1).len(), 1);
        assert_eq!(generate("g", 7, 1).len(), 7);
    }
}

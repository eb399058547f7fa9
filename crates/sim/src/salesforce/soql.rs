//! The SOQL subset the simulator understands, and query cursors.
//!
//! ```text
//! SELECT field [, field ...] FROM Account|Contact|Lead
//!   [WHERE cond [AND cond ...]] [ORDER BY Id [ASC|DESC]] [LIMIT n]
//! cond: field = value | field != value | field IN (value [, value ...])
//! value: 'text' (escapes \' \" \\ \n \r \t \b \f \uXXXX) | null | true | false
//! ```
//!
//! Keywords, object and field names are case-insensitive. As in SOQL, `=` and `IN` compare
//! text case-insensitively, id fields (`Id`, `AccountId`, ...) compare as ids (15 or 18
//! characters), and `!= 'x'` also matches records where the field is null. Without `ORDER BY`
//! records come in creation order (Salesforce promises no order).
//!
//! Errors: an unknown object is `INVALID_TYPE`, an unknown field `INVALID_FIELD`, anything
//! else outside the subset (OR, LIKE, functions, subqueries, other orderings, OFFSET...)
//! `MALFORMED_QUERY`; all answered 400.
//!
//! Results are paged at `query_page_size`; a page that is not the last carries
//! `nextRecordsUrl: /services/data/vXX.X/query/<locator>-<offset>`. The rows are fixed when
//! the query runs (later changes do not show on later pages). As in Salesforce, an org keeps
//! at most 10 open cursors (opening an 11th closes the oldest) and closes one after 15
//! simulated minutes without use or once its last page was served; a closed or unknown
//! locator is `INVALID_QUERY_LOCATOR`.

use std::collections::VecDeque;

use serde_json::{Map, Value, json};

use super::ids::{self, LOCATOR_PREFIX};
use super::records::{BOOL_FIELDS, ID_FIELDS, SObject, SfError, SfRecord, Store};

/// Open cursors per org.
pub const MAX_CURSORS: usize = 10;
/// A cursor closes after this many simulated seconds without use.
pub const CURSOR_IDLE_SECS: f64 = 900.0;

/// A literal in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Null,
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    pub field: String,
    pub op: Op,
    pub values: Vec<Literal>,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub object: SObject,
    /// Canonical field names, in SELECT order.
    pub fields: Vec<String>,
    pub conds: Vec<Cond>,
    pub descending: bool,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Comma,
    Open,
    Close,
    Eq,
    Ne,
    Other(char),
}

fn malformed(message: impl Into<String>) -> SfError {
    SfError::new("MALFORMED_QUERY", message, &[])
}

fn tokenize(q: &str) -> Result<Vec<Tok>, SfError> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma);
            }
            '(' => {
                chars.next();
                out.push(Tok::Open);
            }
            ')' => {
                chars.next();
                out.push(Tok::Close);
            }
            '=' => {
                chars.next();
                out.push(Tok::Eq);
            }
            '!' | '<' => {
                chars.next();
                match (c, chars.next()) {
                    ('!', Some('=')) | ('<', Some('>')) => out.push(Tok::Ne),
                    _ => return Err(malformed(format!("unexpected token: '{c}'"))),
                }
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(malformed("unterminated string literal")),
                        Some('\'') => break,
                        Some('\\') => {
                            let escaped = match chars.next() {
                                Some('\'') => '\'',
                                Some('"') => '"',
                                Some('\\') => '\\',
                                Some('n') => '\n',
                                Some('r') => '\r',
                                Some('t') => '\t',
                                Some('b') => '\u{8}',
                                Some('f') => '\u{c}',
                                Some('u') => {
                                    let hex: String = (0..4).filter_map(|_| chars.next()).collect();
                                    u32::from_str_radix(&hex, 16)
                                        .ok()
                                        .filter(|_| hex.len() == 4)
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| malformed(format!("invalid unicode escape: \\u{hex}")))?
                                }
                                other => {
                                    return Err(malformed(format!(
                                        "Invalid string literal: illegal escape sequence \\{}",
                                        other.map(String::from).unwrap_or_default()
                                    )));
                                }
                            };
                            s.push(escaped);
                        }
                        Some(ch) => s.push(ch),
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() => {
                let mut n = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    n.push(d);
                    chars.next();
                }
                out.push(Tok::Num(n));
            }
            c if c.is_alphanumeric() || c == '_' => {
                let mut w = String::new();
                while let Some(&d) = chars.peek().filter(|d| d.is_alphanumeric() || **d == '_' || **d == '.') {
                    w.push(d);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
            other => {
                chars.next();
                out.push(Tok::Other(other));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    ext_field: &'a str,
}

fn describe(t: Option<&Tok>) -> String {
    match t {
        None => "end of query".to_string(),
        Some(Tok::Word(w)) | Some(Tok::Num(w)) => format!("'{w}'"),
        Some(Tok::Str(s)) => format!("'{s}'"),
        Some(Tok::Comma) => "','".to_string(),
        Some(Tok::Open) => "'('".to_string(),
        Some(Tok::Close) => "')'".to_string(),
        Some(Tok::Eq) => "'='".to_string(),
        Some(Tok::Ne) => "'!='".to_string(),
        Some(Tok::Other(c)) => format!("'{c}'"),
    }
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn unexpected(&self) -> SfError {
        malformed(format!("unexpected token: {}", describe(self.peek())))
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn keyword(&mut self, kw: &str) -> Result<(), SfError> {
        if self.is_keyword(kw) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn word(&mut self) -> Result<String, SfError> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.unexpected()),
        }
    }

    fn field(&self, object: SObject, name: &str) -> Result<String, SfError> {
        object
            .field(self.ext_field, name)
            .map(String::from)
            .ok_or_else(|| {
                SfError::new(
                    "INVALID_FIELD",
                    format!(
                        "No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.",
                        object.name()
                    ),
                    &[],
                )
            })
    }

    fn literal(&mut self) -> Result<Literal, SfError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Literal::Text(s)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            other => Err(malformed(format!("unexpected token: {}", describe(other.as_ref())))),
        }
    }

    fn query(&mut self) -> Result<Query, SfError> {
        self.keyword("SELECT")?;
        let mut names = vec![self.word()?];
        while self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            names.push(self.word()?);
        }
        if names.iter().any(|n| n.eq_ignore_ascii_case("FROM")) {
            return Err(malformed("unexpected token: 'FROM'"));
        }
        self.keyword("FROM")?;
        let object_name = self.word()?;
        let object = SObject::parse(&object_name).ok_or_else(|| {
            SfError::new(
                "INVALID_TYPE",
                format!("sObject type '{object_name}' is not supported."),
                &[],
            )
        })?;
        let mut fields: Vec<String> = Vec::with_capacity(names.len());
        for n in &names {
            if n.contains('(') || n.contains('.') {
                return Err(malformed(format!("unsupported field expression: {n}")));
            }
            let f = self.field(object, n)?;
            if fields.contains(&f) {
                return Err(malformed(format!("duplicate field selected: {f}")));
            }
            fields.push(f);
        }
        let mut conds = Vec::new();
        if self.is_keyword("WHERE") {
            self.pos += 1;
            loop {
                conds.push(self.cond(object)?);
                if self.is_keyword("AND") {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        let mut descending = false;
        if self.is_keyword("ORDER") {
            self.pos += 1;
            self.keyword("BY")?;
            let by = self.word()?;
            if !by.eq_ignore_ascii_case("Id") {
                return Err(malformed(format!("the simulator orders by Id only, not {by}")));
            }
            if self.is_keyword("DESC") {
                self.pos += 1;
                descending = true;
            } else if self.is_keyword("ASC") {
                self.pos += 1;
            }
        }
        let mut limit = None;
        if self.is_keyword("LIMIT") {
            self.pos += 1;
            match self.next() {
                Some(Tok::Num(n)) => {
                    limit = Some(n.parse().map_err(|_| malformed(format!("invalid LIMIT {n}")))?);
                }
                other => return Err(malformed(format!("unexpected token: {}", describe(other.as_ref())))),
            }
        }
        if self.peek().is_some() {
            return Err(self.unexpected());
        }
        Ok(Query {
            object,
            fields,
            conds,
            descending,
            limit,
        })
    }

    fn cond(&mut self, object: SObject) -> Result<Cond, SfError> {
        if self.peek() == Some(&Tok::Open) || self.is_keyword("NOT") {
            return Err(malformed("the simulator supports only conditions joined by AND"));
        }
        let name = self.word()?;
        let field = self.field(object, &name)?;
        let (op, values) = match self.next() {
            Some(Tok::Eq) => (Op::Eq, vec![self.literal()?]),
            Some(Tok::Ne) => (Op::Ne, vec![self.literal()?]),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("IN") => {
                if self.next() != Some(Tok::Open) {
                    return Err(malformed("expected ( after IN"));
                }
                let mut values = vec![self.literal()?];
                loop {
                    match self.next() {
                        Some(Tok::Comma) => values.push(self.literal()?),
                        Some(Tok::Close) => break,
                        other => return Err(malformed(format!("unexpected token: {}", describe(other.as_ref())))),
                    }
                }
                (Op::In, values)
            }
            other => {
                return Err(malformed(format!(
                    "unexpected token: {} (the simulator supports =, != and IN)",
                    describe(other.as_ref())
                )));
            }
        };
        let boolean = BOOL_FIELDS.contains(&field.as_str());
        for v in &values {
            let fits = match v {
                Literal::Null => op != Op::In,
                Literal::Bool(_) => boolean,
                Literal::Text(_) => !boolean,
            };
            if !fits {
                return Err(SfError::new(
                    "INVALID_QUERY_FILTER_OPERATOR",
                    format!("invalid value for field {field}: {v:?}"),
                    &[],
                ));
            }
        }
        Ok(Cond { field, op, values })
    }
}

/// Parses a query of the subset; `ext_field` is the org's external-id field.
pub fn parse(q: &str, ext_field: &str) -> Result<Query, SfError> {
    let toks = tokenize(q)?;
    Parser {
        toks,
        pos: 0,
        ext_field,
    }
    .query()
}

fn matches_one(field: &str, actual: &Value, lit: &Literal) -> bool {
    match lit {
        Literal::Null => actual.is_null(),
        Literal::Bool(b) => actual.as_bool() == Some(*b),
        Literal::Text(t) => match actual.as_str() {
            None => false,
            Some(a) if ID_FIELDS.contains(&field) => ids::normalize(t).is_some_and(|id| id == a),
            Some(a) => a.to_lowercase() == t.to_lowercase(),
        },
    }
}

impl Cond {
    fn holds(&self, rec: &SfRecord) -> bool {
        let actual = rec.value(&self.field);
        let any = self.values.iter().any(|v| matches_one(&self.field, &actual, v));
        match self.op {
            Op::Eq | Op::In => any,
            Op::Ne => !any,
        }
    }
}

impl Query {
    /// The matching records as query rows (`attributes`, then the selected fields).
    pub fn run(&self, store: &Store, version: &str) -> Vec<Value> {
        let matching = store.of(self.object).filter(|r| self.conds.iter().all(|c| c.holds(r)));
        let rows: Box<dyn Iterator<Item = &SfRecord>> = if self.descending {
            Box::new(matching.collect::<Vec<_>>().into_iter().rev())
        } else {
            Box::new(matching)
        };
        rows.take(self.limit.unwrap_or(usize::MAX))
            .map(|r| {
                let mut m = Map::new();
                let name = self.object.name();
                m.insert(
                    "attributes".into(),
                    json!({"type": name, "url": format!("/services/data/{version}/sobjects/{name}/{}", r.id)}),
                );
                for f in &self.fields {
                    m.insert(f.clone(), r.value(f));
                }
                Value::Object(m)
            })
            .collect()
    }
}

/// An open query cursor: the rest of a result.
#[derive(Debug)]
struct Cursor {
    locator: String,
    rows: Vec<Value>,
    last_used: f64,
}

/// An org's open cursors, oldest first.
#[derive(Debug, Default)]
pub struct Cursors {
    open: VecDeque<Cursor>,
    seq: u64,
}

impl Cursors {
    fn expire(&mut self, now: f64) {
        self.open.retain(|c| c.last_used + CURSOR_IDLE_SECS > now);
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The first page of `rows`, opening a cursor when more remain.
    pub fn first_page(&mut self, rows: Vec<Value>, page_size: usize, version: &str, pod: &str, now: f64) -> Value {
        self.expire(now);
        let total = rows.len();
        if total <= page_size {
            return page(total, rows, None);
        }
        self.seq += 1;
        let locator = ids::make(LOCATOR_PREFIX, pod, self.seq);
        let first: Vec<Value> = rows[..page_size].to_vec();
        let next = format!("/services/data/{version}/query/{locator}-{page_size}");
        if self.open.len() >= MAX_CURSORS {
            self.open.pop_front();
        }
        self.open.push_back(Cursor {
            locator,
            rows,
            last_used: now,
        });
        page(total, first, Some(next))
    }

    /// The page at `<locator>-<offset>`; closes the cursor after its last page.
    pub fn next_page(&mut self, locator: &str, page_size: usize, version: &str, now: f64) -> Result<Value, SfError> {
        self.expire(now);
        let invalid = || SfError::new("INVALID_QUERY_LOCATOR", "invalid query locator", &[]);
        let (id, offset) = locator.rsplit_once('-').ok_or_else(invalid)?;
        let offset: usize = offset.parse().map_err(|_| invalid())?;
        let id = ids::normalize(id).ok_or_else(invalid)?;
        let pos = self.open.iter().position(|c| c.locator == id).ok_or_else(invalid)?;
        let cursor = &mut self.open[pos];
        let total = cursor.rows.len();
        if offset > total {
            return Err(invalid());
        }
        cursor.last_used = now;
        let end = (offset + page_size).min(total);
        let rows = cursor.rows[offset..end].to_vec();
        let next = (end < total).then(|| format!("/services/data/{version}/query/{id}-{end}"));
        if next.is_none() {
            self.open.remove(pos);
        }
        Ok(page(total, rows, next))
    }
}

fn page(total: usize, records: Vec<Value>, next: Option<String>) -> Value {
    let mut m = Map::new();
    m.insert("totalSize".into(), json!(total));
    m.insert("done".into(), json!(next.is_none()));
    m.insert("records".into(), Value::Array(records));
    if let Some(next) = next {
        m.insert("nextRecordsUrl".into(), json!(next));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT: &str = "Nylas_Contact_Id__c";

    fn code(q: &str) -> &'static str {
        parse(q, EXT).err().map_or("OK", |e| e.code)
    }

    #[test]
    fn the_subset_parses_case_insensitively_with_escapes() {
        let q = parse(
            r"select id, EMAIL, nylas_contact_id__c from contact where Email = 'o\'brien\\x@y.com' and AccountId != null and Nylas_Contact_Id__c IN ('a', 'b\u00e9') order by Id desc limit 5",
            EXT,
        )
        .expect("parses");
        assert_eq!(q.object, SObject::Contact);
        assert_eq!(q.fields, ["Id", "Email", EXT]);
        assert_eq!(q.conds[0].values, [Literal::Text("o'brien\\x@y.com".into())]);
        assert_eq!(q.conds[1].op, Op::Ne);
        assert_eq!(
            q.conds[2].values,
            [Literal::Text("a".into()), Literal::Text("bé".into())]
        );
        assert!(q.descending);
        assert_eq!(q.limit, Some(5));
        assert_eq!(code("SELECT Id FROM Lead WHERE IsConverted = false"), "OK");
    }

    #[test]
    fn outside_the_subset_is_an_error_with_salesforces_codes() {
        assert_eq!(code("SELECT Id FROM Opportunity"), "INVALID_TYPE");
        assert_eq!(code("SELECT Foo FROM Contact"), "INVALID_FIELD");
        assert_eq!(code("SELECT Company FROM Contact"), "INVALID_FIELD");
        for q in [
            "SELECT Id FROM Contact WHERE Email = 'a' OR Email = 'b'",
            "SELECT Id FROM Contact WHERE Email LIKE 'a%'",
            "SELECT COUNT() FROM Contact",
            "SELECT Id FROM Contact ORDER BY Email",
            "SELECT Id FROM Contact LIMIT 5 OFFSET 5",
            "SELECT Id, Id FROM Contact",
            "SELECT Id FROM Contact WHERE Email = 'unterminated",
            "SELECT Id FROM Contact WHERE Email = 'bad \\q escape'",
            "SELECT FROM Contact",
            "DELETE FROM Contact",
        ] {
            assert_eq!(code(q), "MALFORMED_QUERY", "{q}");
        }
    }

    #[test]
    fn cursors_page_and_close_and_at_most_ten_stay_open() {
        let mut c = Cursors::default();
        let rows: Vec<Value> = (0..5).map(|i| json!({"n": i})).collect();
        let first = c.first_page(rows.clone(), 2, "v60.0", "Ab", 0.0);
        assert_eq!(
            (first["totalSize"].clone(), first["done"].clone()),
            (json!(5), json!(false))
        );
        let next = first["nextRecordsUrl"].as_str().expect("next").to_string();
        let locator = next.rsplit('/').next().expect("locator").to_string();
        let second = c.next_page(&locator, 2, "v60.0", 1.0).expect("page 2");
        assert_eq!(second["records"], json!([{"n": 2}, {"n": 3}]));
        let third_url = second["nextRecordsUrl"].as_str().expect("next").to_string();
        let third = c
            .next_page(third_url.rsplit('/').next().expect("locator"), 2, "v60.0", 2.0)
            .expect("page 3");
        assert_eq!(
            (third["done"].clone(), third.get("nextRecordsUrl")),
            (json!(true), None)
        );
        assert!(c.is_empty(), "closed after the last page");
        assert!(c.next_page(&locator, 2, "v60.0", 3.0).is_err());
        let urls: Vec<String> = (0..11)
            .map(|_| {
                c.first_page(rows.clone(), 2, "v60.0", "Ab", 4.0)["nextRecordsUrl"]
                    .as_str()
                    .map(String::from)
                    .expect("next")
            })
            .collect();
        assert_eq!(c.len(), MAX_CURSORS);
        let oldest = urls[0].rsplit('/').next().expect("locator");
        assert_eq!(
            c.next_page(oldest, 2, "v60.0", 5.0).err().map(|e| e.code),
            Some("INVALID_QUERY_LOCATOR")
        );
        let newest = urls[10].rsplit('/').next().expect("locator");
        assert!(c.next_page(newest, 2, "v60.0", 5.0).is_ok());
        assert!(
            c.next_page(newest, 2, "v60.0", 5.0 + CURSOR_IDLE_SECS + 1.0).is_err(),
            "idle cursors close"
        );
    }
}

//! Nylas's JSON, private to this crate, converted to the domain's [`Contact`] by hand so a
//! change in the API cannot silently change anything else.

use crmsync_domain::{Contact, ContactEmail, ContactPhone, ImAddress, PhysicalAddress, WebPage};
use serde::Deserialize;

use crate::error::NylasError;

#[derive(Deserialize)]
struct PageDto {
    request_id: Option<String>,
    #[serde(default)]
    data: Option<Vec<ContactDto>>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct SingleDto {
    data: ContactDto,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContactDto {
    id: Option<String>,
    grant_id: Option<String>,
    source: Option<String>,
    display_name: Option<String>,
    given_name: Option<String>,
    middle_name: Option<String>,
    surname: Option<String>,
    suffix: Option<String>,
    nickname: Option<String>,
    birthday: Option<String>,
    company_name: Option<String>,
    job_title: Option<String>,
    manager_name: Option<String>,
    office_location: Option<String>,
    notes: Option<String>,
    picture_url: Option<String>,
    emails: Option<Vec<EmailDto>>,
    phone_numbers: Option<Vec<PhoneDto>>,
    im_addresses: Option<Vec<ImDto>>,
    physical_addresses: Option<Vec<AddressDto>>,
    web_pages: Option<Vec<WebDto>>,
    groups: Option<Vec<GroupDto>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EmailDto {
    email: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PhoneDto {
    number: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ImDto {
    #[serde(rename = "type")]
    kind: Option<String>,
    im_address: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AddressDto {
    format: Option<String>,
    street_address: Option<String>,
    city: Option<String>,
    postal_code: Option<String>,
    state: Option<String>,
    country: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WebDto {
    url: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GroupDto {
    id: Option<String>,
}

impl ContactDto {
    fn into_domain(self) -> Result<Contact, NylasError> {
        let id = self
            .id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| NylasError::Decode("contact without an id".into()))?;
        Ok(Contact {
            id,
            grant_id: self.grant_id,
            source: self.source,
            display_name: self.display_name,
            given_name: self.given_name,
            middle_name: self.middle_name,
            surname: self.surname,
            suffix: self.suffix,
            nickname: self.nickname,
            birthday: self.birthday,
            company_name: self.company_name,
            job_title: self.job_title,
            manager_name: self.manager_name,
            office_location: self.office_location,
            notes: self.notes,
            picture_url: self.picture_url,
            emails: self
                .emails
                .unwrap_or_default()
                .into_iter()
                .map(|e| ContactEmail {
                    email: e.email,
                    kind: e.kind,
                })
                .collect(),
            phone_numbers: self
                .phone_numbers
                .unwrap_or_default()
                .into_iter()
                .map(|p| ContactPhone {
                    number: p.number,
                    kind: p.kind,
                })
                .collect(),
            im_addresses: self
                .im_addresses
                .unwrap_or_default()
                .into_iter()
                .map(|i| ImAddress {
                    kind: i.kind,
                    im_address: i.im_address,
                })
                .collect(),
            physical_addresses: self
                .physical_addresses
                .unwrap_or_default()
                .into_iter()
                .map(|a| PhysicalAddress {
                    format: a.format,
                    street_address: a.street_address,
                    city: a.city,
                    postal_code: a.postal_code,
                    state: a.state,
                    country: a.country,
                    kind: a.kind,
                })
                .collect(),
            web_pages: self
                .web_pages
                .unwrap_or_default()
                .into_iter()
                .map(|w| WebPage {
                    url: w.url,
                    kind: w.kind,
                })
                .collect(),
            groups: self
                .groups
                .unwrap_or_default()
                .into_iter()
                .filter_map(|g| g.id)
                .collect(),
        })
    }
}

pub(crate) fn parse_page(body: &[u8]) -> Result<crate::ContactPage, NylasError> {
    let page: PageDto = serde_json::from_slice(body).map_err(|e| NylasError::Decode(format!("contact page: {e}")))?;
    // A page without `data` is malformed, never an empty last page: taken as one, a run would
    // "complete" having read nothing.
    let contacts = page
        .data
        .ok_or_else(|| NylasError::Decode("a contact page without `data`".into()))?
        .into_iter()
        .map(ContactDto::into_domain)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(crate::ContactPage {
        contacts,
        next_cursor: page.next_cursor.filter(|c| !c.is_empty()),
        request_id: page.request_id,
    })
}

pub(crate) fn parse_single(body: &[u8]) -> Result<Contact, NylasError> {
    let one: SingleDto = serde_json::from_slice(body).map_err(|e| NylasError::Decode(format!("contact: {e}")))?;
    one.data.into_domain()
}

/// Parses one contact object as Nylas sends it (in a page, a single read, or a webhook).
pub fn parse_contact(v: &serde_json::Value) -> Result<Contact, NylasError> {
    ContactDto::deserialize(v)
        .map_err(|e| NylasError::Decode(format!("contact: {e}")))?
        .into_domain()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_without_data_is_an_error_that_retries_never_an_empty_last_page() {
        for body in [
            r#"{"request_id":"r"}"#,
            r#"{"request_id":"r","data":null}"#,
            r#"{"request_id":"r","next_cursor":"c2"}"#,
        ] {
            let e = parse_page(body.as_bytes()).expect_err(body);
            assert_eq!(e.code(), "NYLAS_DECODE", "{body}");
            assert!(matches!(e.next(), crate::Next::RetryLater(_)), "{body}");
        }
    }

    #[test]
    fn last_page_cursor_absent_null_or_empty() {
        for body in [
            r#"{"request_id":"r","data":[]}"#,
            r#"{"request_id":"r","data":[],"next_cursor":null}"#,
            r#"{"request_id":"r","data":[],"next_cursor":""}"#,
        ] {
            assert_eq!(parse_page(body.as_bytes()).expect("page").next_cursor, None, "{body}");
        }
        let p = parse_page(br#"{"data":[{"id":"a","emails":null}],"next_cursor":"c2"}"#).expect("page");
        assert_eq!(p.next_cursor.as_deref(), Some("c2"));
        assert!(p.contacts[0].emails.is_empty());
    }
}

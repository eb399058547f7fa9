//! The Nylas v3 contact, every field of it. Lists that Nylas sends as `null` are empty here;
//! strings it leaves out are `None`.

/// A contact from a mailbox address book (Google, Microsoft, iCloud, Yahoo, EWS, IMAP via Nylas).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    pub id: String,
    pub grant_id: Option<String>,
    /// `address_book`, `domain` or `inbox`.
    pub source: Option<String>,
    pub display_name: Option<String>,
    pub given_name: Option<String>,
    pub middle_name: Option<String>,
    pub surname: Option<String>,
    pub suffix: Option<String>,
    pub nickname: Option<String>,
    pub birthday: Option<String>,
    pub company_name: Option<String>,
    pub job_title: Option<String>,
    pub manager_name: Option<String>,
    pub office_location: Option<String>,
    pub notes: Option<String>,
    pub picture_url: Option<String>,
    pub emails: Vec<ContactEmail>,
    pub phone_numbers: Vec<ContactPhone>,
    pub im_addresses: Vec<ImAddress>,
    pub physical_addresses: Vec<PhysicalAddress>,
    pub web_pages: Vec<WebPage>,
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactEmail {
    pub email: Option<String>,
    /// `work`, `home` or `other`.
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactPhone {
    pub number: Option<String>,
    /// `work`, `home`, `mobile` or `other`.
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImAddress {
    pub kind: Option<String>,
    pub im_address: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhysicalAddress {
    pub format: Option<String>,
    pub street_address: Option<String>,
    pub city: Option<String>,
    pub postal_code: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebPage {
    pub url: Option<String>,
    pub kind: Option<String>,
}

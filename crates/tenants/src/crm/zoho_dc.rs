//! Zoho's data centers: where a tenant's accounts server is. A token works only in the DC that
//! issued it; the sink always calls the `api_domain` the token endpoint returns (overridable
//! per tenant).

/// One data center.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataCenter {
    pub code: &'static str,
    pub accounts_url: &'static str,
    pub api_domain: &'static str,
}

/// Every Zoho data center: the seven of the documented table plus Saudi Arabia and the UK.
pub const DATA_CENTERS: [DataCenter; 9] = [
    DataCenter {
        code: "us",
        accounts_url: "https://accounts.zoho.com",
        api_domain: "https://www.zohoapis.com",
    },
    DataCenter {
        code: "eu",
        accounts_url: "https://accounts.zoho.eu",
        api_domain: "https://www.zohoapis.eu",
    },
    DataCenter {
        code: "in",
        accounts_url: "https://accounts.zoho.in",
        api_domain: "https://www.zohoapis.in",
    },
    DataCenter {
        code: "au",
        accounts_url: "https://accounts.zoho.com.au",
        api_domain: "https://www.zohoapis.com.au",
    },
    DataCenter {
        code: "jp",
        accounts_url: "https://accounts.zoho.jp",
        api_domain: "https://www.zohoapis.jp",
    },
    DataCenter {
        code: "cn",
        accounts_url: "https://accounts.zoho.com.cn",
        api_domain: "https://www.zohoapis.com.cn",
    },
    DataCenter {
        code: "ca",
        accounts_url: "https://accounts.zohocloud.ca",
        api_domain: "https://www.zohoapis.ca",
    },
    DataCenter {
        code: "sa",
        accounts_url: "https://accounts.zoho.sa",
        api_domain: "https://www.zohoapis.sa",
    },
    DataCenter {
        code: "uk",
        accounts_url: "https://accounts.zoho.uk",
        api_domain: "https://www.zohoapis.uk",
    },
];

/// The data center with this code (case-insensitive).
pub fn data_center(code: &str) -> Option<&'static DataCenter> {
    DATA_CENTERS.iter().find(|d| d.code.eq_ignore_ascii_case(code.trim()))
}

/// Codes of all data centers, for messages.
pub fn codes() -> String {
    DATA_CENTERS.iter().map(|d| d.code).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dc_has_distinct_https_urls() {
        let mut seen = std::collections::HashSet::new();
        for d in DATA_CENTERS {
            assert!(d.accounts_url.starts_with("https://accounts.zoho"), "{d:?}");
            assert!(d.api_domain.starts_with("https://www.zohoapis."), "{d:?}");
            assert!(seen.insert(d.api_domain));
        }
        assert_eq!(
            data_center("EU").map(|d| d.accounts_url),
            Some("https://accounts.zoho.eu")
        );
        assert_eq!(data_center("ca").map(|d| d.api_domain), Some("https://www.zohoapis.ca"));
        assert!(data_center("mars").is_none());
    }
}

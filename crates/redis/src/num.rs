//! Numbers as people read them, one format for every count the CLI and `crmsync status`
//! print: thousands separated by commas (`2,190`), and a part of a whole as `2,190/40,000`.

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `-1,234` as well as `1,234`.
pub fn thousands_signed(n: i64) -> String {
    match n {
        0.. => thousands(n.unsigned_abs()),
        _ => format!("-{}", thousands(n.unsigned_abs())),
    }
}

/// `2,190/40,000`: a part of a whole (used of allowed, pages read of pages).
pub fn out_of(part: u64, whole: u64) -> String {
    format!("{}/{}", thousands(part), thousands(whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(2_190), "2,190");
        assert_eq!(thousands(40_000_000), "40,000,000");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(thousands_signed(-1_234), "-1,234");
        assert_eq!(thousands_signed(i64::MIN), "-9,223,372,036,854,775,808");
        assert_eq!(thousands_signed(12), "12");
        assert_eq!(out_of(2_190, 40_000), "2,190/40,000");
    }
}

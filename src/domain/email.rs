use std::fmt;

/// An email address that has been normalized and checked.
///
/// Addresses are compared as a whole in lowercase: `Ada@Example.org` and
/// `ada@example.org` are the same member. Providers that treat the local part as
/// case-sensitive are vanishingly rare, while members typing their address with a
/// capital letter on a phone are not. The domain is stored in its ASCII (punycode)
/// form, so `ana@bücher.de` and `ana@xn--bcher-kva.de` are one address too.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a string is not an acceptable email address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the email address is empty")]
    Empty,
    #[error("the email address is longer than 254 characters")]
    TooLong,
    #[error("the email address contains a space or a control character")]
    ForbiddenCharacter,
    #[error("the email address needs exactly one '@' with text on both sides")]
    Shape,
    #[error("the domain is not a valid host name")]
    Domain,
}

const MAX_LEN: usize = 254;

impl Email {
    /// Trims, lowercases and checks `raw`; internationalized domains become punycode.
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::ForbiddenCharacter);
        }
        let (local, domain) = trimmed.rsplit_once('@').ok_or(EmailError::Shape)?;
        if local.is_empty() || domain.is_empty() || local.contains('@') {
            return Err(EmailError::Shape);
        }
        // Lowercasing can change the length (`İ` is 2 bytes, `i̇` 3; the Kelvin
        // sign 3, `k` 1): the limit applies to the form that is stored, so that
        // it parses again to itself.
        let local = local.to_lowercase();
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError::Shape);
        }
        if local.contains(['"', '(', ')', ',', ':', ';', '<', '>', '[', ']', '\\']) {
            return Err(EmailError::Shape);
        }
        let domain = ascii_domain(domain)?;
        let address = format!("{local}@{domain}");
        if address.len() > MAX_LEN {
            return Err(EmailError::TooLong);
        }
        Ok(Self(address))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after the `@`, in ASCII form.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

/// Converts a domain to lowercase ASCII (IDNA/UTS-46) and checks its labels.
fn ascii_domain(domain: &str) -> Result<String, EmailError> {
    let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::Domain)?;
    if ascii.is_empty() || ascii.len() > 253 || !ascii.contains('.') {
        return Err(EmailError::Domain);
    }
    let labels_ok = ascii.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    });
    if labels_ok {
        Ok(ascii)
    } else {
        Err(EmailError::Domain)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.0)
    }
}

impl std::str::FromStr for Email {
    type Err = EmailError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases_the_whole_address() {
        let email = Email::parse("  Ada.Lovelace@Example.ORG \n").unwrap();
        assert_eq!(email.as_str(), "ada.lovelace@example.org");
    }

    #[test]
    fn internationalized_domains_become_punycode() {
        let email = Email::parse("ana@Bücher.de").unwrap();
        assert_eq!(email.as_str(), "ana@xn--bcher-kva.de");
        assert_eq!(email, Email::parse("ana@xn--bcher-kva.de").unwrap());
    }

    #[test]
    fn rejects_what_could_smuggle_headers_or_break_parsing() {
        for bad in [
            "ada@example.org\r\nBcc: eve@evil.test",
            "ada@exam ple.org",
            "ada\0@example.org",
            "ada example@example.org",
        ] {
            assert_eq!(
                Email::parse(bad),
                Err(EmailError::ForbiddenCharacter),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_shapes() {
        for bad in [
            "",
            "   ",
            "ada",
            "@example.org",
            "ada@",
            "a@b@example.org",
            "ada@localhost",
            "ada@-example.org",
            "ada@example..org",
            ".ada@example.org",
            "ad..a@example.org",
            "<ada>@example.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn enforces_length_limits() {
        // The local part has no limit of its own (RFC 5321's 64 octets is a
        // transport's business, and the API's spec could not state it next to
        // the dot rules): the whole address is what is limited.
        let long_local = format!("{}@example.org", "a".repeat(65));
        assert!(Email::parse(&long_local).is_ok());
        let too_long = format!("{}@example.org", "a".repeat(243));
        assert_eq!(Email::parse(&too_long), Err(EmailError::TooLong));
        let long_domain = format!(
            "{}@{}.org",
            "a".repeat(10),
            vec!["a".repeat(60); 4].join(".")
        );
        assert_eq!(Email::parse(&long_domain), Err(EmailError::TooLong));
        let ok = format!("{}@example.org", "a".repeat(64));
        assert!(Email::parse(&ok).is_ok());
    }

    /// Found by the property below: the limit used to be checked before lowercasing.
    #[test]
    fn length_limits_apply_to_the_lowercased_form() {
        // 254 bytes as typed, 256 once `İ` is lowercased.
        let grows = format!("{}İİ@example.org", "a".repeat(238));
        assert_eq!(Email::parse(&grows), Err(EmailError::TooLong));
        // 255 bytes as typed, 253 once the Kelvin sign is `k`.
        let shrinks = format!("{}\u{212A}@example.org", "a".repeat(240));
        let email = Email::parse(&shrinks).unwrap();
        assert_eq!(email.as_str(), format!("{}k@example.org", "a".repeat(240)));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Address-like text: mostly valid shapes, with the characters whose
    /// lowercase form differs in length (`İ`, the Kelvin sign) or that IDNA
    /// maps (`ß`, `Ü`, full-width letters), around the limits.
    fn addressish() -> impl Strategy<Value = String> {
        let local = "[a-zA-Z0-9._%+İK\u{212A}ßÜ-]{1,70}";
        let domain = "[a-zA-Z0-9äÜß\u{FF21}-]{1,20}(\\.[a-zA-Z0-9-]{1,12}){0,3}";
        let general = (local, domain, " {0,2}")
            .prop_map(|(local, domain, pad)| format!("{pad}{local}@{domain}"));
        // Addresses at the 254-byte limit in one case, but not in the other.
        let near_limit = ("[a-z]{230,241}", "[İ\u{212A}]{1,4}")
            .prop_map(|(ascii, changing)| format!("{ascii}{changing}@example.org"));
        prop_oneof![general, near_limit]
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(raw in any::<String>()) {
            let _ = Email::parse(&raw);
        }

        #[test]
        fn the_normalized_form_parses_to_itself(raw in prop_oneof![addressish(), any::<String>()]) {
            if let Ok(email) = Email::parse(&raw) {
                let again = Email::parse(email.as_str());
                prop_assert_eq!(again.as_ref(), Ok(&email), "{:?}", raw);
                prop_assert!(email.as_str().len() <= MAX_LEN);
                prop_assert_eq!(email.as_str(), email.as_str().trim());
                prop_assert!(email.domain().is_ascii());
            }
        }
    }
}

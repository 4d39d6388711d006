//! `redirect_to` targets: only http(s) URLs on an allowed origin, compared as
//! parsed origins (scheme, host, port), never as string prefixes.

/// A URL that a sign-in may redirect to. Its fragment is dropped: gatehouse puts the tokens there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTarget(url::Url);

impl RedirectTarget {
    /// Accepts `raw` only if it is an absolute http(s) URL without credentials whose
    /// origin is in `allowed`. Relative (`//evil`), opaque (`javascript:`) and
    /// userinfo (`https://good@evil`) forms all fail one of these checks.
    pub fn parse(raw: &str, allowed: &[url::Origin]) -> Option<Self> {
        if raw
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '\\')
        {
            return None;
        }
        let mut url = url::Url::parse(raw).ok()?;
        let acceptable = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && url.host().is_some()
            && allowed.contains(&url.origin());
        if !acceptable {
            return None;
        }
        url.set_fragment(None);
        Some(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The target with `fragment` set (it carries the tokens, which never reach a server log).
    pub fn with_fragment(&self, fragment: &str) -> String {
        let mut url = self.0.clone();
        url.set_fragment(Some(fragment));
        url.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<url::Origin> {
        vec![url::Url::parse("https://app.example.org").unwrap().origin()]
    }

    #[test]
    fn accepts_paths_on_allowed_origins_and_drops_fragments() {
        let target =
            RedirectTarget::parse("https://app.example.org/welcome?x=1#old", &allowed()).unwrap();
        assert_eq!(target.as_str(), "https://app.example.org/welcome?x=1");
        assert_eq!(
            target.with_fragment("a=b"),
            "https://app.example.org/welcome?x=1#a=b"
        );
    }

    #[test]
    fn refuses_open_redirect_tricks() {
        for bad in [
            "//evil.test/",
            "/relative",
            "https:evil.test",
            "https:/evil.test",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://app.example.org@evil.test/",
            "https://user:pw@app.example.org/",
            "https://app.example.org.evil.test/",
            "http://app.example.org/",
            "https://app.example.org:8443/",
            "https://evil.test\\@app.example.org",
            "https://evil.test/\napp.example.org",
            " https://app.example.org/",
        ] {
            assert!(
                RedirectTarget::parse(bad, &allowed()).is_none(),
                "{bad:?} must be refused"
            );
        }
    }
}

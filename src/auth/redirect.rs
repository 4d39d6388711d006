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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    fn allowed() -> Vec<url::Origin> {
        ["https://app.example.org", "http://localhost:3000"]
            .iter()
            .map(|o| url::Url::parse(o).unwrap().origin())
            .collect()
    }

    /// Allowed origins in other spellings, near misses and open-redirect
    /// tricks, followed by path-ish text with the characters that matter.
    fn targetish() -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            Just("https://app.example.org"),
            Just("HTTPS://App.Example.ORG:443"),
            Just("http://localhost:3000"),
            Just("http://127.0.0.1:3000"),
            Just("https://app.example.org.evil.test"),
            Just("https://app.example.org@evil.test"),
            Just("https://evil.test"),
            Just("//app.example.org"),
            Just("/"),
            Just("javascript:"),
            Just("https:app.example.org"),
            Just(""),
        ];
        (prefix, "[a-zA-Z0-9/?#&=%.@:;\\\\ _~é-]{0,30}").prop_map(|(p, rest)| format!("{p}{rest}"))
    }

    proptest! {
        #[test]
        fn never_panics(raw in prop_oneof![targetish(), any::<String>()]) {
            let _ = RedirectTarget::parse(&raw, &allowed());
        }

        /// What is accepted is an http(s) URL on an allowed origin, without
        /// credentials or fragment, and accepted again as it is.
        #[test]
        fn accepted_targets_are_on_an_allowed_origin_and_round_trip(raw in targetish()) {
            if let Some(target) = RedirectTarget::parse(&raw, &allowed()) {
                let url = url::Url::parse(target.as_str()).unwrap();
                prop_assert!(allowed().contains(&url.origin()), "{raw:?} -> {url}");
                prop_assert!(matches!(url.scheme(), "http" | "https"));
                prop_assert!(url.username().is_empty() && url.password().is_none());
                prop_assert_eq!(url.fragment(), None);
                prop_assert_eq!(RedirectTarget::parse(target.as_str(), &allowed()), Some(target.clone()));
                let with = url::Url::parse(&target.with_fragment("t=1")).unwrap();
                prop_assert_eq!(with.origin(), url.origin());
            }
        }
    }
}

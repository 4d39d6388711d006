//! The console's cookie session and its CSRF token.
//!
//! The cookie holds no secret of its own: it names a gatehouse sign-in session
//! (member and session id) and when it was last used, under an HMAC made with a
//! key derived from the server secret. Every request looks the session up
//! again, so logout, suspension, losing `admin` or "revoke sessions" end the
//! console session at the next request, on every instance. The CSRF token is an
//! HMAC of the session id under a second key: one per session, nothing stored.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::auth::{ServerSecret, hmac_sha256};
use crate::domain::MemberId;

/// The one-line message for the next page, on every page's path.
pub const FLASH_COOKIE: &str = "gatehouse_flash";

/// The two areas a cookie session opens, each with its own cookie (sent only
/// to its own paths) and its own key: the admin console and a member's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Console,
    Account,
}

impl Door {
    pub fn cookie(self) -> &'static str {
        match self {
            Door::Console => "gatehouse_console",
            Door::Account => "gatehouse_account",
        }
    }

    /// The path the cookie is scoped to.
    pub fn path(self) -> &'static str {
        match self {
            Door::Console => "/admin",
            Door::Account => "/account",
        }
    }

    /// Where someone without a session is sent.
    pub fn sign_in_path(self) -> &'static str {
        match self {
            Door::Console => "/admin/sign-in",
            Door::Account => "/sign-in",
        }
    }

    fn purpose(self) -> &'static str {
        match self {
            Door::Console => "admin console",
            Door::Account => "member account",
        }
    }
}

/// What a valid cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCookie {
    pub member_id: MemberId,
    pub session_id: String,
    /// Unix seconds of the last request that refreshed the cookie.
    pub last_seen: i64,
}

/// The two keys, derived once from the server secret.
#[derive(Clone)]
pub struct SessionKeys {
    cookie: [u8; 32],
    csrf: [u8; 32],
}

impl SessionKeys {
    pub fn new(secret: &ServerSecret, door: Door) -> Self {
        Self {
            cookie: secret.derive(&format!("{} cookie", door.purpose())),
            csrf: secret.derive(&format!("{} csrf", door.purpose())),
        }
    }

    /// The cookie's value: `member.session.last_seen.mac`.
    pub fn seal(&self, cookie: &SessionCookie) -> String {
        let body = format!(
            "{}.{}.{}",
            cookie.member_id, cookie.session_id, cookie.last_seen
        );
        let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(&self.cookie, body.as_bytes()));
        format!("{body}.{mac}")
    }

    /// The cookie behind `value`, if gatehouse made it.
    pub fn open(&self, value: &str) -> Option<SessionCookie> {
        let (body, mac_text) = value.rsplit_once('.')?;
        let presented = URL_SAFE_NO_PAD.decode(mac_text).ok()?;
        let expected = hmac_sha256(&self.cookie, body.as_bytes());
        if !bool::from(presented.ct_eq(&expected)) {
            return None;
        }
        let mut parts = body.split('.');
        let member_id = MemberId::parse(parts.next()?)?;
        let session_id = parts.next()?.to_owned();
        let last_seen = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(SessionCookie {
            member_id,
            session_id,
            last_seen,
        })
    }

    /// The CSRF token of a session.
    pub fn csrf_token(&self, session_id: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac_sha256(&self.csrf, session_id.as_bytes()))
    }

    pub fn csrf_matches(&self, session_id: &str, presented: &str) -> bool {
        bool::from(
            self.csrf_token(session_id)
                .as_bytes()
                .ct_eq(presented.as_bytes()),
        )
    }
}

/// The value of the cookie `name` in a `Cookie` request header.
pub fn read_cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: always `HttpOnly`, `Secure` when the public URL is
/// https, `SameSite=Strict` unless the cookie must come along when a mailed
/// link is opened (`lax`). `max_age` 0 deletes it.
pub fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age_secs: u64,
    secure: bool,
    lax: bool,
) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite={}{}",
        if lax { "Lax" } else { "Strict" },
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys::new(
            &ServerSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            Door::Console,
        )
    }

    fn cookie() -> SessionCookie {
        SessionCookie {
            member_id: MemberId::new(),
            session_id: uuid::Uuid::new_v4().to_string(),
            last_seen: 1_700_000_000,
        }
    }

    #[test]
    fn a_sealed_cookie_opens_to_itself() {
        let cookie = cookie();
        assert_eq!(keys().open(&keys().seal(&cookie)), Some(cookie));
    }

    #[test]
    fn a_changed_cookie_or_another_key_does_not_open() {
        let sealed = keys().seal(&cookie());
        let (body, mac) = sealed.rsplit_once('.').unwrap();
        let later = body.rsplit_once('.').unwrap().0.to_owned() + ".1800000000";
        assert_eq!(keys().open(&format!("{later}.{mac}")), None);
        let other = SessionKeys::new(
            &ServerSecret::new(b"another secret of thirty-two bytes!".to_vec()),
            Door::Console,
        );
        assert_eq!(other.open(&sealed), None);
        let account = SessionKeys::new(
            &ServerSecret::new(b"0123456789abcdef0123456789abcdef".to_vec()),
            Door::Account,
        );
        assert_eq!(
            account.open(&sealed),
            None,
            "a console cookie opens no account"
        );
        assert_eq!(keys().open("garbage"), None);
        assert_eq!(keys().open(""), None);
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let token = keys().csrf_token("s1");
        assert!(keys().csrf_matches("s1", &token));
        assert!(!keys().csrf_matches("s2", &token));
        assert!(!keys().csrf_matches("s1", ""));
    }

    #[test]
    fn reads_one_cookie_among_several() {
        let header = "a=1; gatehouse_console=xyz.abc; b=2";
        assert_eq!(read_cookie(header, Door::Console.cookie()), Some("xyz.abc"));
        assert_eq!(read_cookie(header, "missing"), None);
    }
}

#[cfg(test)]
mod cookie_tests {
    use super::*;

    #[test]
    fn cookies_carry_their_flags() {
        let strict = set_cookie("a", "v", "/admin", 60, true, false);
        assert_eq!(
            strict,
            "a=v; Path=/admin; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        let lax = set_cookie("b", "v", "/", 0, false, true);
        assert_eq!(lax, "b=v; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    }
}

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A bearer secret handed to a client once: 256 random bits, base64url without padding.
///
/// Used for magic-link tokens and refresh tokens. Only its [`TokenHash`] is ever
/// stored; the `Debug` form shows a prefix so a stray log line cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken(String);

impl OpaqueToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Accepts exactly the shape `generate` produces; anything else cannot match a stored hash.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let decoded = URL_SAFE_NO_PAD.decode(raw).ok()?;
        (decoded.len() == 32).then(|| Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.0.as_bytes())
    }
}

impl fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OpaqueToken({}…)", &self.0[..4.min(self.0.len())])
    }
}

/// The SHA-256 of a secret, hex-encoded: what the database keeps instead of the secret.
///
/// SHA-256 (not a slow hash) is right for 256-bit random tokens: there is nothing
/// to brute-force, and lookups by hash must be fast.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TokenHash(String);

impl TokenHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(hex::encode(Sha256::digest(bytes)))
    }

    /// Rebuilds a hash read back from storage.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.0[..8.min(self.0.len())])
    }
}

/// The six-digit code mailed beside a link, for signing in on another device.
#[derive(Clone, PartialEq, Eq)]
pub struct SignInCode(String);

impl SignInCode {
    pub fn generate() -> Self {
        use rand::Rng;
        Self(format!("{:06}", OsRng.gen_range(0..1_000_000u32)))
    }

    /// Accepts six digits, with spaces or dashes a member may have typed between them.
    pub fn parse(raw: &str) -> Option<Self> {
        let digits: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(Self(digits))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A code has only a million values, so its hash is keyed by a server-side pepper
    /// and salted with the link it belongs to: a copy of the database alone does not
    /// reveal codes, and one code's hash says nothing about another's.
    pub fn hash(&self, pepper: &[u8], link: &TokenHash) -> TokenHash {
        let mut input = Vec::with_capacity(pepper.len() + 64 + 6);
        input.extend_from_slice(pepper);
        input.extend_from_slice(link.as_str().as_bytes());
        input.extend_from_slice(self.0.as_bytes());
        TokenHash::of(&input)
    }
}

impl fmt::Debug for SignInCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignInCode(******)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_round_trip() {
        let token = OpaqueToken::generate();
        assert_eq!(token.expose().len(), 43);
        assert_eq!(OpaqueToken::parse(token.expose()), Some(token.clone()));
        assert_ne!(token, OpaqueToken::generate());
        assert!(OpaqueToken::parse("short").is_none());
        assert!(!format!("{token:?}").contains(token.expose()));
    }

    #[test]
    fn codes_are_six_digits_and_tolerate_typing() {
        let code = SignInCode::generate();
        assert_eq!(code.expose().len(), 6);
        assert_eq!(SignInCode::parse("123 456").unwrap().expose(), "123456");
        assert_eq!(SignInCode::parse("123-456").unwrap().expose(), "123456");
        assert!(SignInCode::parse("12345").is_none());
        assert!(SignInCode::parse("12345a").is_none());
    }

    #[test]
    fn code_hashes_depend_on_pepper_and_link() {
        let code = SignInCode::parse("123456").unwrap();
        let a = TokenHash::of(b"a");
        let b = TokenHash::of(b"b");
        assert_ne!(code.hash(b"p", &a), code.hash(b"p", &b));
        assert_ne!(code.hash(b"p", &a), code.hash(b"q", &a));
        assert!(code.hash(b"p", &a).ct_eq(&code.hash(b"p", &a)));
    }
}

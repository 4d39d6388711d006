//! The algorithms gatehouse signs access tokens with.

use std::fmt;
use std::str::FromStr;

/// A JWS algorithm gatehouse signs with, named as in the JWT `alg` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    /// ECDSA on P-256 with SHA-256: the default for a new installation.
    Es256,
    /// Ed25519.
    EdDsa,
    /// HMAC-SHA-256 with the server secret, which verifiers must then share.
    Hs256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Hs256 => "HS256",
        }
    }

    /// Whether verifiers need only a public key (published in the JWKS).
    pub fn is_asymmetric(self) -> bool {
        !matches!(self, Self::Hs256)
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not one of ES256, EdDSA, HS256")]
pub struct UnknownAlg(pub String);

impl FromStr for SigningAlg {
    type Err = UnknownAlg;

    /// Exact names, case-insensitively (`es256`, `EDDSA` are accepted).
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim().to_ascii_uppercase().as_str() {
            "ES256" => Ok(Self::Es256),
            "EDDSA" => Ok(Self::EdDsa),
            "HS256" => Ok(Self::Hs256),
            _ => Err(UnknownAlg(value.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_names_it_prints_and_nothing_else() {
        for alg in [SigningAlg::Es256, SigningAlg::EdDsa, SigningAlg::Hs256] {
            assert_eq!(alg.as_str().parse::<SigningAlg>(), Ok(alg));
        }
        assert_eq!("eddsa".parse::<SigningAlg>(), Ok(SigningAlg::EdDsa));
        for bad in ["none", "RS256", "HS512", ""] {
            assert!(bad.parse::<SigningAlg>().is_err(), "{bad}");
        }
    }
}

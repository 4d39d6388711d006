//! Key material: generating ES256 and EdDSA key pairs, their public JWKs and
//! key ids, and turning a stored key back into what signs and verifies.
//!
//! `ring` generates the keys: it is the crypto library `jsonwebtoken` already
//! signs and verifies with (and rustls uses), so no second implementation of
//! P-256 or Ed25519 enters the build. Keys are PKCS#8 DER, the form
//! `jsonwebtoken`'s `EncodingKey::from_ec_der` / `from_ed_der` take.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::keys::ServerSecret;
use crate::domain::SigningAlg;

#[derive(Debug, thiserror::Error)]
pub enum KeyMaterialError {
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("key {kid}: {reason}")]
    Unreadable { kid: String, reason: String },
}

/// A freshly generated asymmetric key.
pub struct GeneratedKey {
    pub kid: String,
    /// The public JWK, `kid`, `alg` and `use` included.
    pub public_jwk: Value,
    /// The private key, PKCS#8 DER: seal it before it leaves memory.
    pub pkcs8: Vec<u8>,
}

/// Generates a key pair for `alg` (ES256 or EdDSA).
pub fn generate(alg: SigningAlg) -> Result<GeneratedKey, KeyMaterialError> {
    let rng = SystemRandom::new();
    let failed = |e: ring::error::Unspecified| KeyMaterialError::Generate(e.to_string());
    let rejected = |e: ring::error::KeyRejected| KeyMaterialError::Generate(e.to_string());
    let (pkcs8, public) = match alg {
        SigningAlg::Es256 => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(failed)?;
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                    .map_err(rejected)?;
            (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
        }
        SigningAlg::EdDsa => {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(failed)?;
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(rejected)?;
            (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
        }
        SigningAlg::Hs256 => {
            return Err(KeyMaterialError::Generate(
                "HS256 signs with the server secret; there is no key pair to generate".into(),
            ));
        }
    };
    let (kid, public_jwk) = public_jwk(alg, &public)?;
    Ok(GeneratedKey {
        kid,
        public_jwk,
        pkcs8,
    })
}

/// The JWK of a public key (an uncompressed P-256 point, or 32 Ed25519 bytes)
/// and its key id: the RFC 7638 thumbprint, so anyone can recompute it.
fn public_jwk(alg: SigningAlg, public: &[u8]) -> Result<(String, Value), KeyMaterialError> {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    // RFC 7638: the required members only, in lexicographic order, no spaces.
    let (required, mut jwk) = match alg {
        SigningAlg::Es256 if public.len() == 65 && public[0] == 4 => {
            let (x, y) = (b64(&public[1..33]), b64(&public[33..]));
            (
                format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                json!({ "kty": "EC", "crv": "P-256", "x": x, "y": y }),
            )
        }
        SigningAlg::EdDsa if public.len() == 32 => {
            let x = b64(public);
            (
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                json!({ "kty": "OKP", "crv": "Ed25519", "x": x }),
            )
        }
        _ => {
            return Err(KeyMaterialError::Generate(format!(
                "unexpected {alg} public key of {} bytes",
                public.len()
            )));
        }
    };
    let kid = b64(&Sha256::digest(required.as_bytes()));
    jwk["kid"] = json!(kid);
    jwk["alg"] = json!(alg.as_str());
    jwk["use"] = json!("sig");
    Ok((kid, jwk))
}

/// What signs and verifies with one key.
pub struct KeyPairs {
    /// `None` when the private part cannot be opened (the server secret changed):
    /// the key still verifies, but cannot sign.
    pub signer: Option<Signer>,
    pub decoding: DecodingKey,
}

/// A private key parsed once, so that signing a token costs one signature.
/// (`jsonwebtoken::encode` parses the PKCS#8 document on every call, which for
/// ES256 and EdDSA costs a scalar multiplication, as much as the signature.)
pub enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Hs256(EncodingKey),
}

impl Signer {
    /// The JWS signature of `message`, base64url-encoded.
    pub fn sign(&self, message: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
        match self {
            Self::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(|signature| URL_SAFE_NO_PAD.encode(signature.as_ref()))
                .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey.into()),
            Self::EdDsa(pair) => Ok(URL_SAFE_NO_PAD.encode(pair.sign(message).as_ref())),
            Self::Hs256(key) => jsonwebtoken::crypto::sign(message, key, Algorithm::HS256),
        }
    }
}

pub fn jwt_algorithm(alg: SigningAlg) -> Algorithm {
    match alg {
        SigningAlg::Es256 => Algorithm::ES256,
        SigningAlg::EdDsa => Algorithm::EdDSA,
        SigningAlg::Hs256 => Algorithm::HS256,
    }
}

/// The HS256 key: the server secret itself.
pub fn hs256_pairs(secret: &ServerSecret) -> KeyPairs {
    KeyPairs {
        signer: Some(Signer::Hs256(EncodingKey::from_secret(secret.bytes()))),
        decoding: DecodingKey::from_secret(secret.bytes()),
    }
}

/// An asymmetric key from its stored public JWK and, when it could be opened,
/// its PKCS#8 private key (checked to be a key of `alg`).
pub fn asymmetric_pairs(
    kid: &str,
    alg: SigningAlg,
    public_jwk: &str,
    pkcs8: Option<&[u8]>,
) -> Result<KeyPairs, KeyMaterialError> {
    let unreadable = |reason: String| KeyMaterialError::Unreadable {
        kid: kid.to_owned(),
        reason,
    };
    let jwk: Value =
        serde_json::from_str(public_jwk).map_err(|e| unreadable(format!("public JWK: {e}")))?;
    let member = |name: &str| {
        jwk[name]
            .as_str()
            .ok_or_else(|| unreadable(format!("public JWK lacks `{name}`")))
    };
    let decoding = match alg {
        SigningAlg::Es256 => DecodingKey::from_ec_components(member("x")?, member("y")?),
        SigningAlg::EdDsa => DecodingKey::from_ed_components(member("x")?),
        SigningAlg::Hs256 => return Err(unreadable("an HS256 key has no public JWK".into())),
    }
    .map_err(|e| unreadable(format!("public key: {e}")))?;
    let signer = match pkcs8 {
        None => None,
        Some(der) => {
            let signer = match alg {
                SigningAlg::Es256 => EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &SystemRandom::new(),
                )
                .map(Signer::Es256)
                .ok(),
                _ => Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map(Signer::EdDsa)
                    .ok(),
            };
            Some(signer.ok_or_else(|| unreadable(format!("private key is not an {alg} key")))?)
        }
    };
    Ok(KeyPairs { signer, decoding })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_and_are_named_by_their_thumbprint() {
        for alg in [SigningAlg::Es256, SigningAlg::EdDsa] {
            let key = generate(alg).unwrap();
            assert_eq!(key.public_jwk["kid"], key.kid.as_str());
            assert_eq!(key.public_jwk["alg"], alg.as_str());
            assert_eq!(key.kid.len(), 43, "base64url of SHA-256");
            let pairs =
                asymmetric_pairs(&key.kid, alg, &key.public_jwk.to_string(), Some(&key.pkcs8))
                    .unwrap();
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#)),
                URL_SAFE_NO_PAD.encode(r#"{"a":1}"#)
            );
            let signature = pairs
                .signer
                .as_ref()
                .unwrap()
                .sign(input.as_bytes())
                .unwrap();
            let token = format!("{input}.{signature}");
            let mut validation = jsonwebtoken::Validation::new(jwt_algorithm(alg));
            validation.required_spec_claims.clear();
            validation.validate_exp = false;
            jsonwebtoken::decode::<Value>(&token, &pairs.decoding, &validation).unwrap();
        }
    }

    #[test]
    fn a_private_key_of_another_algorithm_is_refused() {
        let ec = generate(SigningAlg::Es256).unwrap();
        let ed = generate(SigningAlg::EdDsa).unwrap();
        assert!(
            asymmetric_pairs(
                &ec.kid,
                SigningAlg::Es256,
                &ec.public_jwk.to_string(),
                Some(&ed.pkcs8)
            )
            .is_err()
        );
        assert!(generate(SigningAlg::Hs256).is_err());
    }
}

//! Authenticated encryption of outbox bodies (XChaCha20-Poly1305), so that a copy
//! of the database alone never yields a usable sign-in link or code. The key is
//! derived from the server secret, which lives outside the database.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::MailError;

const NONCE_LEN: usize = 24;

pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Base64 of a random nonce followed by the ciphertext.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption with a fresh nonce cannot fail for inputs under 256 GiB.
        out.extend(self.cipher.encrypt(&nonce, plaintext).unwrap_or_default());
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, MailError> {
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|e| MailError::Seal(e.to_string()))?;
        if bytes.len() < NONCE_LEN {
            return Err(MailError::Seal("too short".into()));
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| MailError::Seal("cannot decrypt (was the server secret changed?)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_tampering_and_wrong_keys() {
        let sealer = Sealer::new([7; 32]);
        let sealed = sealer.seal(b"https://id.example.org/auth/confirm?token=secret");
        assert!(!sealed.contains("secret"));
        assert_eq!(
            sealer.open(&sealed).unwrap(),
            b"https://id.example.org/auth/confirm?token=secret"
        );
        assert!(Sealer::new([8; 32]).open(&sealed).is_err());
        let mut bytes = STANDARD.decode(&sealed).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&STANDARD.encode(bytes)).is_err());
    }
}

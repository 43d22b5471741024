//! Key pairs, public keys, signatures and the key file format.
//!
//! # Key file format
//!
//! A secret key file is UTF-8 text of exactly two lines:
//!
//! ```text
//! bft-rs-ed25519-secret-key-v1
//! <64 lowercase hex digits: the 32-byte ed25519 seed>
//! ```
//!
//! The reader tolerates a trailing newline, CRLF line ends, blank lines after the seed, white space
//! around the seed and upper-case hex; it rejects anything else. The public key is derived from
//! the seed. [`KeyPair::save`] creates the file with mode `0600` on Unix, refuses to overwrite an
//! existing file, and removes what it created if writing fails.

use crate::domain::SignatureDomain;
use curve25519_dalek::edwards::CompressedEdwardsY;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::Write;
use std::path::Path;

/// First line of a secret key file.
const KEY_FILE_MAGIC: &str = "bft-rs-ed25519-secret-key-v1";

/// An ed25519 key pair: the secret seed and its public key.
#[derive(Clone)]
pub struct KeyPair {
    signing: ed25519_zebra::SigningKey,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// Generates a key pair from the operating system's random number generator.
    pub fn generate() -> Result<KeyPair, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(KeyPair::from_seed(seed))
    }

    /// Builds the key pair for a 32-byte seed (deterministic: tests and simulations use this).
    pub fn from_seed(seed: [u8; 32]) -> KeyPair {
        let signing = ed25519_zebra::SigningKey::from(seed);
        let public = PublicKey(ed25519_zebra::VerificationKeyBytes::from(&signing).into());
        KeyPair { signing, public }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `payload` in `domain` (the signed bytes are the domain header then the payload).
    pub fn sign(&self, domain: &SignatureDomain, payload: &[u8]) -> Signature {
        self.sign_raw(&domain.signed_bytes(payload))
    }

    /// Signs `message` exactly as given. Protocol code uses [`KeyPair::sign`].
    pub fn sign_raw(&self, message: &[u8]) -> Signature {
        Signature(self.signing.sign(message).to_bytes())
    }

    /// Encodes the key pair in the key file format (see the module documentation).
    pub fn to_key_file(&self) -> String {
        format!(
            "{KEY_FILE_MAGIC}\n{}\n",
            hex::encode(self.signing.as_bytes())
        )
    }

    /// Decodes the key file format.
    pub fn from_key_file(text: &str) -> Result<KeyPair, KeyFileError> {
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_MAGIC) {
            return Err(KeyFileError::BadHeader);
        }
        let hex_seed = lines.next().ok_or(KeyFileError::MissingSeed)?.trim();
        if lines.any(|line| !line.trim().is_empty()) {
            return Err(KeyFileError::TrailingData);
        }
        let mut seed = [0u8; 32];
        hex::decode_to_slice(hex_seed, &mut seed).map_err(|_| KeyFileError::BadSeed)?;
        Ok(KeyPair::from_seed(seed))
    }

    /// Writes the key file to `path`, readable by its owner only; fails if the file exists.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let io = |source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = options.open(path).map_err(io)?;
        let written = file
            .write_all(self.to_key_file().as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            // Leave no partial key behind: a retry would otherwise fail with "already exists".
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(io(source));
        }
        Ok(())
    }

    /// Reads a key file from `path`.
    pub fn load(path: &Path) -> Result<KeyPair, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        KeyPair::from_key_file(&text)
    }
}

/// Why a key file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The first line is not the key file magic.
    #[error("not a bft-rs key file: the first line must be `{KEY_FILE_MAGIC}`")]
    BadHeader,
    /// There is no second line.
    #[error("key file has no seed line")]
    MissingSeed,
    /// The second line is not 64 hex digits.
    #[error("key file seed must be 64 hex digits")]
    BadSeed,
    /// Something follows the seed line.
    #[error("key file has unexpected lines after the seed")]
    TrailingData,
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An ed25519 public key (32 bytes, as encoded). Serialized as a hex string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// Why a public key is unfit to identify a cluster member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WeakKeyError {
    /// The bytes do not decode to a curve point.
    #[error("not a valid curve point")]
    NotAPoint,
    /// The point's encoding is not canonical.
    #[error("non-canonical point encoding")]
    NonCanonical,
    /// The point has small order: anyone can produce signatures that verify under it.
    #[error("small-order point")]
    SmallOrder,
    /// The point has a torsion component (mixed order). Such a key verifies under the cofactored
    /// rule, but no honestly generated key looks like this, and other verifiers may disagree.
    #[error("mixed-order point (has a torsion component)")]
    MixedOrder,
}

impl PublicKey {
    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0
    }

    /// Checks that this key is a canonically encoded point of prime order, as every honestly
    /// generated key is. Configurations call it for every member key: under the cofactored
    /// verification rule, a small-order key accepts forged signatures on any message.
    pub fn check_strong(&self) -> Result<(), WeakKeyError> {
        let point = CompressedEdwardsY(self.0)
            .decompress()
            .ok_or(WeakKeyError::NotAPoint)?;
        if point.compress().0 != self.0 {
            return Err(WeakKeyError::NonCanonical);
        }
        if point.is_small_order() {
            return Err(WeakKeyError::SmallOrder);
        }
        if !point.is_torsion_free() {
            return Err(WeakKeyError::MixedOrder);
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &hex::encode(self.0)[..8])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for PublicKey {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes)?;
        Ok(PublicKey(bytes))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An ed25519 signature (64 bytes: `R` then `s`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", &hex::encode(self.0)[..8])
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A fixed-size tuple: 64 bytes on the wire, no length prefix.
        use serde::ser::SerializeTuple;
        let mut tuple = serializer.serialize_tuple(64)?;
        for byte in &self.0 {
            tuple.serialize_element(byte)?;
        }
        tuple.end()
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SignatureVisitor;
        impl<'de> serde::de::Visitor<'de> for SignatureVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut bytes = [0u8; 64];
                for (i, byte) in bytes.iter_mut().enumerate() {
                    *byte = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(bytes))
            }
        }
        deserializer.deserialize_tuple(64, SignatureVisitor)
    }
}

//! The keys that sign and verify access tokens: Ed25519 (EdDSA), each named by a `kid`.
//!
//! One key signs; every configured key verifies. Rotating is therefore two configuration changes
//! with no downtime: add the new key and make it the signing one (tokens signed by the old key
//! still verify), then, once the old key's last tokens have expired (the access token TTL), remove
//! it. A key that only verifies may be given as its public half. The public halves are published
//! as a JWKS, so that other parties can verify tokens without sharing a secret.
//!
//! A token's `kid` is only ever a lookup in this set: never a path, a URL or anything fetched.

use std::{collections::HashMap, path::PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use oms_saga::config::Secret;

/// One key: its id, and its PEM, inline or in a file. A private key (PKCS#8) can sign; a public
/// key (SPKI) only verifies.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem_file: Option<PathBuf>,
}

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Makes a new Ed25519 private key, as a PKCS#8 PEM.
pub fn generate() -> Result<String, String> {
    let document = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .map_err(|_| "cannot generate an Ed25519 key".to_owned())?;
    Ok(pem("PRIVATE KEY", document.as_ref()))
}

/// The public half of a private key PEM, as an SPKI PEM, for keys that only verify.
pub fn public_pem(private_pem: &str) -> Result<String, String> {
    let (_, raw) = parse(private_pem)?;
    Ok(pem("PUBLIC KEY", &[&SPKI_PREFIX[..], &raw].concat()))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// A PEM's signing key, if it is private, and its raw public key.
fn parse(text: &str) -> Result<(Option<EncodingKey>, Vec<u8>), String> {
    let text = text.trim();
    let (label, der) = ["PRIVATE KEY", "PUBLIC KEY"]
        .into_iter()
        .find_map(|label| {
            let body = text
                .strip_prefix(&format!("-----BEGIN {label}-----"))?
                .strip_suffix(&format!("-----END {label}-----"))?;
            let body: String = body.split_whitespace().collect();
            Some((label, STANDARD.decode(body).ok()?))
        })
        .ok_or("not a PEM private or public key")?;
    if label == "PRIVATE KEY" {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|e| format!("not an Ed25519 PKCS#8 private key: {e}"))?;
        Ok((
            Some(EncodingKey::from_ed_der(&der)),
            pair.public_key().as_ref().to_vec(),
        ))
    } else {
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(raw) if raw.len() == 32 => Ok((None, raw.to_vec())),
            _ => Err("not an Ed25519 public key".into()),
        }
    }
}

/// The configured keys, loaded and checked.
pub struct KeyRing {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid)
            .field("kids", &self.verifying.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads `keys`; `signing_kid` (by default the first private key) signs.
    pub fn load(keys: &[KeyConfig], signing_kid: Option<&str>) -> Result<Self, String> {
        let mut verifying = HashMap::new();
        let mut signing = None;
        let mut published = Vec::new();
        for key in keys {
            let text = match (&key.pem, &key.pem_file) {
                (Some(pem), None) => pem.expose().to_owned(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| format!("key {}: {}: {e}", key.kid, path.display()))?,
                _ => {
                    return Err(format!(
                        "key {}: set exactly one of pem and pem_file",
                        key.kid
                    ));
                }
            };
            let (private, raw) = parse(&text).map_err(|e| format!("key {}: {e}", key.kid))?;
            let x = URL_SAFE_NO_PAD.encode(&raw);
            if key.kid.is_empty() || verifying.contains_key(&key.kid) {
                return Err(format!(
                    "key ids must be non-empty and unique: {:?}",
                    key.kid
                ));
            }
            verifying.insert(
                key.kid.clone(),
                DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?,
            );
            published.push(serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": x, "kid": key.kid, "alg": "EdDSA", "use": "sig",
            }));
            if let Some(private) = private {
                let wanted = signing_kid.is_none_or(|kid| kid == key.kid);
                if wanted && signing.is_none() {
                    signing = Some((key.kid.clone(), private));
                }
            }
        }
        let (signing_kid, signing) = signing.ok_or_else(|| match signing_kid {
            Some(kid) => format!("jwt.signing_kid {kid:?} names no private key"),
            None => "jwt.keys has no private key to sign with".to_owned(),
        })?;
        Ok(Self {
            signing_kid,
            signing,
            verifying,
            jwks: serde_json::json!({ "keys": published }),
        })
    }

    pub fn signing(&self) -> (&str, &EncodingKey) {
        (&self.signing_kid, &self.signing)
    }

    pub fn verifying(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifying.get(kid)
    }

    /// The public keys, as a JSON Web Key Set.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(kid: &str, pem: String) -> KeyConfig {
        KeyConfig {
            kid: kid.into(),
            pem: Some(Secret::new(pem)),
            pem_file: None,
        }
    }

    #[test]
    fn the_named_private_key_signs_and_every_key_is_published() {
        let (old, new) = (generate().expect("in test"), generate().expect("in test"));
        let ring = KeyRing::load(
            &[
                inline("old", public_pem(&old).expect("in test")),
                inline("new", new.clone()),
            ],
            Some("new"),
        )
        .expect("in test");
        assert_eq!(ring.signing().0, "new");
        assert!(ring.verifying("old").is_some() && ring.verifying("new").is_some());
        assert!(ring.verifying("../../etc/passwd").is_none());
        let kids: Vec<&str> = ring.jwks()["keys"]
            .as_array()
            .expect("in test")
            .iter()
            .map(|k| k["kid"].as_str().expect("in test"))
            .collect();
        assert_eq!(kids, ["old", "new"]);
        // Only the public half is published: 32 bytes.
        let x = ring.jwks()["keys"][1]["x"].as_str().expect("in test");
        assert_eq!(URL_SAFE_NO_PAD.decode(x).expect("in test").len(), 32);
    }

    #[test]
    fn a_public_key_cannot_sign_and_garbage_is_refused() {
        let key = generate().expect("in test");
        let error = KeyRing::load(&[inline("k", public_pem(&key).expect("in test"))], None)
            .expect_err("in test");
        assert!(error.contains("no private key"), "{error}");
        let error = KeyRing::load(
            &[inline(
                "k",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----".into(),
            )],
            None,
        )
        .expect_err("in test");
        assert!(error.contains("not an Ed25519"), "{error}");
        let error = KeyRing::load(&[inline("k", key.clone()), inline("k", key)], None)
            .expect_err("in test");
        assert!(error.contains("unique"), "{error}");
    }
}

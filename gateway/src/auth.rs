//! Who the caller is: password login against configured users, and the JWTs that carry the
//! result. Tokens are EdDSA only, signed by one of the [`KeyRing`]'s keys and naming it in `kid`.
//! The algorithm is fixed by the verifier, never taken from the token, so `alg: none` and
//! algorithm confusion (an HS256 token "signed" with a public key) are refused. Each token names
//! its session (`sid`), which logout ends.
//!
//! Checking a signature costs tens of microseconds, paid on every request; so a token that
//! verified is remembered, by its exact text, until it expires. Keys are fixed for the life of
//! the process, so a remembered verdict cannot go stale before then.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use jsonwebtoken::{Algorithm, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    config::{JwtConfig, UserConfig},
    keys::KeyRing,
};

pub use oms_saga::identity::Role;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<Uuid>,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    /// The session: a logout ends every token of it.
    pub sid: Uuid,
}

/// Why a token was refused; each is a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token names no key of this gateway")]
    UnknownKey,
    #[error("the session has ended")]
    Revoked,
    #[error("the token is malformed or not acceptable")]
    Invalid,
}

pub struct Tokens {
    keys: KeyRing,
    validation: Validation,
    config: JwtConfig,
    /// Tokens that verified, by their text.
    verified: Mutex<HashMap<Box<str>, Claims>>,
}

/// The most verified tokens remembered; past it, they are all forgotten.
const VERIFIED_AT_MOST: usize = 10_000;

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Tokens {
    pub fn new(config: &JwtConfig) -> Result<Self, String> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = 5;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Self {
            keys: KeyRing::load(&config.keys, config.signing_kid.as_deref())?,
            validation,
            config: config.clone(),
            verified: Mutex::default(),
        })
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    pub fn refresh_ttl(&self) -> Duration {
        self.config.refresh_ttl
    }

    /// An access token for `user` in session `sid`.
    pub fn issue(
        &self,
        user: &UserConfig,
        sid: Uuid,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now();
        let claims = Claims {
            sub: user.username.clone(),
            role: user.role,
            customer_id: user.customer_id,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat,
            exp: iat + self.config.ttl.as_secs(),
            sid,
        };
        let (kid, key) = self.keys.signing();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key)
    }

    /// The claims of a token this gateway signed, with a key it still has, that has not expired.
    /// It does not know whether the session is still open: [`crate::sessions`] does.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let mut verified = self.verified();
        if let Some(claims) = verified.get(token) {
            // The same leeway as the validation's.
            if claims.exp + self.validation.leeway >= now() {
                return Ok(claims.clone());
            }
            verified.remove(token);
            return Err(TokenError::Expired);
        }
        drop(verified);
        let claims = self.check(token)?;
        let mut verified = self.verified();
        if verified.len() >= VERIFIED_AT_MOST {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Claims>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Verifies `token` from scratch: its signature, claims and scope.
    fn check(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.verifying(kid))
            .ok_or(TokenError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                _ => TokenError::Invalid,
            })?;
        // A user token must name its customer, or it could not be scoped.
        if claims.role == Role::User && claims.customer_id.is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }
}

/// The configured users, by name.
#[derive(Debug, Clone)]
pub struct Users {
    by_name: Arc<HashMap<String, UserConfig>>,
    /// Verified against when the name is unknown, so a wrong name takes as long as a wrong
    /// password and names cannot be probed by timing.
    decoy: Arc<String>,
}

impl Users {
    pub fn new(users: &[UserConfig]) -> Self {
        let by_name = users
            .iter()
            .map(|u| (u.username.clone(), u.clone()))
            .collect();
        let decoy = hash_password("decoy password that matches nothing").unwrap_or_default();
        Self {
            by_name: Arc::new(by_name),
            decoy: Arc::new(decoy),
        }
    }

    /// The user of that name, as configured now.
    pub fn get(&self, username: &str) -> Option<&UserConfig> {
        self.by_name.get(username)
    }

    /// The user, if the password is theirs. Runs the hash on a blocking thread: it is slow on
    /// purpose.
    pub async fn authenticate(&self, username: &str, password: &str) -> Option<UserConfig> {
        let user = self.by_name.get(username).cloned();
        let hash = user.as_ref().map_or_else(
            || self.decoy.as_str().to_owned(),
            |u| u.password_hash.expose().to_owned(),
        );
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        user.filter(|_| matches)
    }
}

pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

//! Who the caller is: password login against configured users, and the JWTs that carry the
//! result. Tokens are HS256 only; the algorithm is fixed by the verifier, never taken from the
//! token, so `alg: none` and algorithm confusion are refused.

use std::{collections::HashMap, sync::Arc, time::Duration};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::{JwtConfig, UserConfig};

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
    #[error("the token is malformed or not acceptable")]
    Invalid,
}

pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    config: JwtConfig,
}

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
    pub fn new(config: &JwtConfig, secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            config: config.clone(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.config.ttl
    }

    pub fn issue(&self, user: &UserConfig) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now();
        let claims = Claims {
            sub: user.username.clone(),
            role: user.role,
            customer_id: user.customer_id,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            iat,
            exp: iat + self.config.ttl.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
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

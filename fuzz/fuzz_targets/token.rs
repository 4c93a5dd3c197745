//! The gateway's token checks, on two kinds of input: any string as a bearer token, and tokens
//! whose header and claims are arbitrary JSON but carry a valid signature of the gateway's own
//! key, so that the claims handling past the signature is reached too. Nothing may panic, and a
//! token accepted must say who and what it is for.
#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use oms_gateway::{
    auth::{Role, Tokens},
    config::JwtConfig,
    keys::{self, KeyConfig},
};
use oms_saga::config::Secret;

struct Keys {
    tokens: Tokens,
    signing: EncodingKey,
    audience: String,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let pem = keys::generate().expect("a key");
    let config = JwtConfig {
        keys: vec![KeyConfig {
            kid: "fuzz".into(),
            pem: Some(Secret::new(pem.clone())),
            pem_file: None,
        }],
        ..JwtConfig::default()
    };
    Keys {
        tokens: Tokens::new(&config).expect("tokens"),
        signing: EncodingKey::from_ed_pem(pem.as_bytes()).expect("key"),
        audience: config.audience,
    }
});

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fuzz_target!(|data: &[u8]| {
    let keys = &*KEYS;
    let accepted = match data.split_first() {
        // A header and claims of the fuzzer's, signed with our key.
        Some((0, rest)) => {
            let text = String::from_utf8_lossy(rest);
            let (header, claims) = text.split_once('\u{0}').unwrap_or((&text, "{}"));
            let message = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &keys.signing, Algorithm::EdDSA)
                    .expect("sign");
            keys.tokens.verify(&format!("{message}.{signature}"))
        }
        _ => keys.tokens.verify(&String::from_utf8_lossy(data)),
    };
    if let Ok(claims) = accepted {
        assert_eq!(claims.aud, keys.audience);
        assert!(claims.exp + 5 >= now(), "an expired token passed");
        assert!(
            claims.role == Role::Admin || claims.customer_id.is_some(),
            "a user token without a customer passed"
        );
    }
});

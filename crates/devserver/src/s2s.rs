//! Server-to-server (S2S) request signatures, checked the way CloudKit checks them (protocol doc §5.2).
//!
//! A signed request carries three headers: `X-Apple-CloudKit-Request-KeyID`,
//! `X-Apple-CloudKit-Request-ISO8601Date` and `X-Apple-CloudKit-Request-SignatureV1`. The signature is
//! ECDSA P-256 with SHA-256 over the UTF-8 string `"{date}:{base64(sha256(body))}:{path}"`, DER-encoded
//! and then standard-base64-encoded. For a request without a body both an empty hash field and the hash
//! of the empty string are accepted, since clients in the wild send either. The date must lie within
//! ten minutes of the server's clock, in either direction.
//!
//! Every failure is answered with the same `401 AUTHENTICATION_FAILED` (built by the router); the
//! [`S2sRejected`] value only says why, for the server's log.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256};

use crate::DevServerError;

/// The header naming the server-to-server key a request was signed with.
pub const KEY_ID_HEADER: &str = "X-Apple-CloudKit-Request-KeyID";
/// The header carrying the ISO 8601 date that was signed.
pub const DATE_HEADER: &str = "X-Apple-CloudKit-Request-ISO8601Date";
/// The header carrying the base64 DER signature.
pub const SIGNATURE_HEADER: &str = "X-Apple-CloudKit-Request-SignatureV1";

/// How far a signed date may be from the server's clock, in either direction.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(10 * 60);

/// The server-to-server public keys the dev server accepts on the public database, by key id.
#[derive(Clone, Default)]
pub struct ServerKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key ids only: the keys themselves are of no use in a log.
        f.debug_struct("ServerKeys")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The parts of a request that a server-to-server signature covers, as received.
#[derive(Clone, Copy, Debug)]
pub struct SignedRequest<'a> {
    /// The `X-Apple-CloudKit-Request-KeyID` header.
    pub key_id: &'a str,
    /// The `X-Apple-CloudKit-Request-ISO8601Date` header, e.g. `2016-01-25T22:15:43Z`.
    pub date: &'a str,
    /// The `X-Apple-CloudKit-Request-SignatureV1` header: base64 of the DER-encoded signature.
    pub signature: &'a str,
    /// The exact body bytes received (empty for a GET).
    pub body: &'a [u8],
    /// The URL path without host or query, e.g. `/database/1/iCloud.com.example/development/public/records/query`.
    pub path: &'a str,
}

/// Why a server-to-server signature was refused. The client is always answered with the same generic
/// `401 AUTHENTICATION_FAILED`; this is for the server's log (it never contains the signature itself).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server-to-server signature rejected: {reason}")]
pub struct S2sRejected {
    /// What was wrong.
    pub reason: S2sRejection,
}

/// The kinds of server-to-server signature failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S2sRejection {
    /// No key with this id is registered: register the public key with the server (`--s2s-key`).
    UnknownKey,
    /// The date header is not an ISO 8601 UTC timestamp such as `2016-01-25T22:15:43Z`.
    MalformedDate,
    /// The signed date is more than ten minutes from the server's clock: fix the client's clock, or
    /// sign the request just before sending it.
    DateOutsideWindow,
    /// The signature header is not standard base64.
    SignatureNotBase64,
    /// The decoded signature is not a DER-encoded ECDSA signature.
    SignatureNotDer,
    /// The signature does not match the date, body and path with this key (a tampered body, a wrong
    /// path, or the wrong private key).
    SignatureMismatch,
}

impl fmt::Display for S2sRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            S2sRejection::UnknownKey => "unknown key id",
            S2sRejection::MalformedDate => "date is not an ISO 8601 UTC timestamp",
            S2sRejection::DateOutsideWindow => {
                "date is more than ten minutes from the server's clock"
            }
            S2sRejection::SignatureNotBase64 => "signature is not base64",
            S2sRejection::SignatureNotDer => "signature is not a DER-encoded ECDSA signature",
            S2sRejection::SignatureMismatch => "signature does not match the request",
        })
    }
}

impl From<S2sRejection> for S2sRejected {
    fn from(reason: S2sRejection) -> Self {
        S2sRejected { reason }
    }
}

impl ServerKeys {
    /// Registers a P-256 public key (PEM, `-----BEGIN PUBLIC KEY-----`) under `key_id`, replacing any
    /// key already registered under that id.
    pub fn insert_pem(&mut self, key_id: &str, public_key_pem: &str) -> Result<(), DevServerError> {
        if key_id.is_empty() {
            return Err(DevServerError::InvalidKey {
                key_id: key_id.to_owned(),
                reason: "the key id is empty".to_owned(),
            });
        }
        let key = VerifyingKey::from_public_key_pem(public_key_pem.trim()).map_err(|e| {
            DevServerError::InvalidKey {
                key_id: key_id.to_owned(),
                reason: format!("not a P-256 public key in PEM form: {e}"),
            }
        })?;
        self.keys.insert(key_id.to_owned(), key);
        Ok(())
    }

    /// Whether no key is registered (then every signed request is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a signed request against the registered keys and the server's clock `now`.
    pub fn verify(&self, request: &SignedRequest<'_>, now: SystemTime) -> Result<(), S2sRejected> {
        let key = self
            .keys
            .get(request.key_id)
            .ok_or(S2sRejection::UnknownKey)?;

        let signed_at =
            humantime::parse_rfc3339(request.date).map_err(|_| S2sRejection::MalformedDate)?;
        let skew = match now.duration_since(signed_at) {
            Ok(behind) => behind,
            Err(ahead) => ahead.duration(),
        };
        if skew > MAX_CLOCK_SKEW {
            return Err(S2sRejection::DateOutsideWindow.into());
        }

        let der = BASE64
            .decode(request.signature.trim())
            .map_err(|_| S2sRejection::SignatureNotBase64)?;
        let signature = Signature::from_der(&der).map_err(|_| S2sRejection::SignatureNotDer)?;

        let body_hash = BASE64.encode(Sha256::digest(request.body));
        let matches = |hash_field: &str| {
            let signed = format!("{}:{}:{}", request.date, hash_field, request.path);
            key.verify(signed.as_bytes(), &signature).is_ok()
        };
        // Clients disagree on what an empty body hashes to: accept both forms.
        if matches(&body_hash) || (request.body.is_empty() && matches("")) {
            Ok(())
        } else {
            Err(S2sRejection::SignatureMismatch.into())
        }
    }
}

/// The two forms `--s2s-key` takes, as error messages show them.
pub const KEY_ARGUMENT_FORMS: &str = "KEY_ID=\"-----BEGIN PUBLIC KEY-----...\" (the PEM itself) or \
     KEY_ID=@path/to/key.pem (a file holding it)";

/// Reads one `--s2s-key` value, `KEY_ID=PEM` or `KEY_ID=@path/to/key.pem`, into (key id, PEM).
/// A file is read here, with a blocking read: call it before the runtime starts or off its
/// threads. The PEM itself is checked when the server starts ([`ServerKeys::insert_pem`]); a value
/// that is neither a PEM (it has no `-----BEGIN` line) nor an `@file` is refused here, naming both
/// forms.
pub fn read_key_argument(value: &str) -> Result<(String, String), DevServerError> {
    let Some((key_id, key)) = value.split_once('=') else {
        return Err(DevServerError::InvalidKey {
            key_id: String::new(),
            reason: format!("expected {KEY_ARGUMENT_FORMS}"),
        });
    };
    let invalid = |reason: String| DevServerError::InvalidKey {
        key_id: key_id.to_owned(),
        reason,
    };
    if key_id.is_empty() {
        return Err(invalid(format!(
            "the key id before `=` is empty; give {KEY_ARGUMENT_FORMS}"
        )));
    }
    let pem = match key.strip_prefix('@') {
        Some("") => {
            return Err(invalid(format!(
                "`@` names no file; give {KEY_ARGUMENT_FORMS}"
            )));
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| invalid(format!("cannot read {path}: {e}")))?,
        None if key.contains("-----BEGIN") => key.to_owned(),
        None => {
            return Err(invalid(format!(
                "the value after `=` is neither a PEM public key nor @file; give {KEY_ARGUMENT_FORMS}"
            )));
        }
    };
    Ok((key_id.to_owned(), pem))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    const PATH: &str = "/database/1/iCloud.com.example.App/development/public/records/query";
    const BODY: &[u8] = br#"{"query":{"recordType":"Artist"}}"#;

    fn signing_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32].into()).unwrap()
    }

    fn keys_with(key_id: &str, key: &SigningKey) -> ServerKeys {
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let mut keys = ServerKeys::default();
        keys.insert_pem(key_id, &pem).unwrap();
        keys
    }

    fn at(date: &str) -> SystemTime {
        humantime::parse_rfc3339(date).unwrap()
    }

    fn sign(key: &SigningKey, date: &str, hash_field: &str, path: &str) -> String {
        let signature: Signature = key.sign(format!("{date}:{hash_field}:{path}").as_bytes());
        BASE64.encode(signature.to_der().as_bytes())
    }

    fn hash(body: &[u8]) -> String {
        BASE64.encode(Sha256::digest(body))
    }

    fn request<'a>(date: &'a str, signature: &'a str, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            key_id: "key-1",
            date,
            signature,
            body,
            path: PATH,
        }
    }

    fn rejection(result: Result<(), S2sRejected>) -> S2sRejection {
        result.unwrap_err().reason
    }

    const DATE: &str = "2016-01-25T22:15:43Z";

    #[test]
    fn a_valid_signature_is_accepted() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let signature = sign(&key, DATE, &hash(BODY), PATH);
        assert_eq!(
            keys.verify(&request(DATE, &signature, BODY), at(DATE)),
            Ok(())
        );
    }

    #[test]
    fn a_date_with_milliseconds_is_accepted() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let date = "2016-01-25T22:15:43.250Z";
        let signature = sign(&key, date, &hash(BODY), PATH);
        assert_eq!(
            keys.verify(&request(date, &signature, BODY), at(DATE)),
            Ok(())
        );
    }

    #[test]
    fn an_empty_body_may_be_signed_with_an_empty_hash_or_the_hash_of_nothing() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let empty_field = sign(&key, DATE, "", PATH);
        let hashed_nothing = sign(&key, DATE, &hash(b""), PATH);
        assert_eq!(hash(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        assert_eq!(
            keys.verify(&request(DATE, &empty_field, b""), at(DATE)),
            Ok(())
        );
        assert_eq!(
            keys.verify(&request(DATE, &hashed_nothing, b""), at(DATE)),
            Ok(())
        );
    }

    #[test]
    fn an_empty_hash_field_is_refused_when_the_body_is_not_empty() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let signature = sign(&key, DATE, "", PATH);
        assert_eq!(
            rejection(keys.verify(&request(DATE, &signature, BODY), at(DATE))),
            S2sRejection::SignatureMismatch
        );
    }

    #[test]
    fn a_tampered_body_is_refused() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let signature = sign(&key, DATE, &hash(BODY), PATH);
        let tampered = br#"{"query":{"recordType":"Artisx"}}"#;
        assert_eq!(
            rejection(keys.verify(&request(DATE, &signature, tampered), at(DATE))),
            S2sRejection::SignatureMismatch
        );
    }

    #[test]
    fn a_signature_for_another_path_is_refused() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let other_path = "/database/1/iCloud.com.example.App/development/public/records/modify";
        let signature = sign(&key, DATE, &hash(BODY), other_path);
        assert_eq!(
            rejection(keys.verify(&request(DATE, &signature, BODY), at(DATE))),
            S2sRejection::SignatureMismatch
        );
    }

    #[test]
    fn a_signature_by_another_private_key_is_refused() {
        let registered = signing_key(7);
        let other = signing_key(9);
        let keys = keys_with("key-1", &registered);
        let signature = sign(&other, DATE, &hash(BODY), PATH);
        assert_eq!(
            rejection(keys.verify(&request(DATE, &signature, BODY), at(DATE))),
            S2sRejection::SignatureMismatch
        );
    }

    #[test]
    fn an_unknown_key_id_is_refused() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let signature = sign(&key, DATE, &hash(BODY), PATH);
        let mut unknown = request(DATE, &signature, BODY);
        unknown.key_id = "key-2";
        assert_eq!(
            rejection(keys.verify(&unknown, at(DATE))),
            S2sRejection::UnknownKey
        );
        assert_eq!(
            rejection(ServerKeys::default().verify(&request(DATE, &signature, BODY), at(DATE))),
            S2sRejection::UnknownKey
        );
    }

    #[test]
    fn a_signature_that_is_not_base64_is_refused() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        assert_eq!(
            rejection(keys.verify(&request(DATE, "not*base64!", BODY), at(DATE))),
            S2sRejection::SignatureNotBase64
        );
    }

    #[test]
    fn a_signature_that_is_not_der_is_refused() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        // The raw 64-byte (r || s) form is valid base64 but not DER.
        let signature: Signature = key.sign(format!("{DATE}:{}:{PATH}", hash(BODY)).as_bytes());
        let raw = BASE64.encode(signature.to_bytes());
        assert_eq!(
            rejection(keys.verify(&request(DATE, &raw, BODY), at(DATE))),
            S2sRejection::SignatureNotDer
        );
        let garbage = BASE64.encode(b"garbage");
        assert_eq!(
            rejection(keys.verify(&request(DATE, &garbage, BODY), at(DATE))),
            S2sRejection::SignatureNotDer
        );
    }

    #[test]
    fn a_high_s_signature_as_openssl_makes_is_accepted() {
        // OpenSSL does not normalise s; CloudKit clients signing with it send either form.
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let low: Signature = key.sign(format!("{DATE}:{}:{PATH}", hash(BODY)).as_bytes());
        let (r, s) = low.split_scalars();
        let high = Signature::from_scalars(r, -*s).unwrap();
        assert_ne!(high, low);
        let encoded = BASE64.encode(high.to_der().as_bytes());
        assert_eq!(
            keys.verify(&request(DATE, &encoded, BODY), at(DATE)),
            Ok(())
        );
    }

    #[test]
    fn a_date_up_to_ten_minutes_off_is_accepted_either_way() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let signature = sign(&key, DATE, &hash(BODY), PATH);
        let signed = request(DATE, &signature, BODY);
        assert_eq!(keys.verify(&signed, at(DATE) + MAX_CLOCK_SKEW), Ok(()));
        assert_eq!(keys.verify(&signed, at(DATE) - MAX_CLOCK_SKEW), Ok(()));
    }

    #[test]
    fn a_date_more_than_ten_minutes_off_is_refused_either_way() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        let signature = sign(&key, DATE, &hash(BODY), PATH);
        let signed = request(DATE, &signature, BODY);
        let beyond = MAX_CLOCK_SKEW + Duration::from_secs(1);
        assert_eq!(
            rejection(keys.verify(&signed, at(DATE) + beyond)),
            S2sRejection::DateOutsideWindow
        );
        assert_eq!(
            rejection(keys.verify(&signed, at(DATE) - beyond)),
            S2sRejection::DateOutsideWindow
        );
    }

    #[test]
    fn a_malformed_date_is_refused() {
        let key = signing_key(7);
        let keys = keys_with("key-1", &key);
        for date in ["", "yesterday", "2016-01-25 22:15:43", "1453760143"] {
            let signature = sign(&key, date, &hash(BODY), PATH);
            assert_eq!(
                rejection(keys.verify(&request(date, &signature, BODY), at(DATE))),
                S2sRejection::MalformedDate,
                "date {date:?}"
            );
        }
    }

    #[test]
    fn a_bad_pem_is_an_invalid_key_error() {
        let mut keys = ServerKeys::default();
        let err = keys.insert_pem("key-1", "not a pem").unwrap_err();
        assert!(
            matches!(&err, DevServerError::InvalidKey { key_id, .. } if key_id == "key-1"),
            "{err}"
        );
        assert!(keys.is_empty());
    }

    #[test]
    fn an_empty_key_id_is_an_invalid_key_error() {
        let key = signing_key(7);
        let pem = key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let mut keys = ServerKeys::default();
        assert!(matches!(
            keys.insert_pem("", &pem),
            Err(DevServerError::InvalidKey { .. })
        ));
        assert!(keys.is_empty());
    }

    #[test]
    fn a_key_argument_is_a_pem_or_a_file_and_anything_else_names_both_forms() {
        let pem = signing_key(7)
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        assert_eq!(
            read_key_argument(&format!("key-1={pem}")).unwrap(),
            ("key-1".to_owned(), pem.clone())
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.pem");
        std::fs::write(&file, &pem).unwrap();
        assert_eq!(
            read_key_argument(&format!("key-2=@{}", file.display())).unwrap(),
            ("key-2".to_owned(), pem)
        );
        for bad in [
            "key-3=MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE",
            "key-3=",
            "key-3=key.pem",
            "key-3=@",
            "no-equals-sign",
        ] {
            let err = read_key_argument(bad).unwrap_err().to_string();
            assert!(
                err.contains("-----BEGIN PUBLIC KEY-----") && err.contains("@path/to/key.pem"),
                "{bad}: {err}"
            );
        }
        let err = read_key_argument("key-3=MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
            .unwrap_err()
            .to_string();
        assert!(err.contains("neither a PEM public key nor @file"), "{err}");
        let missing = read_key_argument(&format!("key-4=@{}", dir.path().join("absent").display()))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot read"), "{missing}");
    }

    #[test]
    fn registering_a_key_makes_the_set_non_empty() {
        let keys = keys_with("key-1", &signing_key(7));
        assert!(!keys.is_empty());
        assert!(ServerKeys::default().is_empty());
    }
}

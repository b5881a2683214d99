//! Authentication: the API token with the user's web auth token, or a server-to-server signing key.
//!
//! Nothing in here prints a token or a key: every type that holds one implements `Debug` by hand and
//! shows `<redacted>` instead.

use crate::error::TransportError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _, LineEnding};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The characters left as they are in a query value: RFC 3986's unreserved set. Everything else,
/// notably `+` (which CloudKit would read as a space), `/` and `=`, is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a token for the query string: `+` becomes `%2B`, `/` `%2F`, `=` `%3D`.
///
/// ```
/// assert_eq!(skysync_transport::auth::encode_query_value("a+b/c=="), "a%2Bb%2Fc%3D%3D");
/// ```
pub fn encode_query_value(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// The container's API token (`ckAPIToken`), created in the CloudKit dashboard.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, for the query string. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// The signed-in user's web auth token (`ckWebAuthToken`). CloudKit hands out a new one with each
/// response; the client takes it up and reports it through the rotation callback.
#[derive(Clone, PartialEq, Eq)]
pub struct WebAuthToken(String);

impl WebAuthToken {
    /// Wraps a token as the sign-in flow delivered it (not percent-encoded).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The token itself, e.g. to persist it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for WebAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebAuthToken(<redacted>)")
    }
}

/// Called with each new web auth token the server hands out, so that the app can persist it and
/// start the next session with it. It runs on a thread of its own (`skysync-token-rotation`), one
/// token at a time in the order the server rotated them, never on an async worker: it may block to
/// write the token down.
pub type TokenRotationCallback = Arc<dyn Fn(&WebAuthToken) + Send + Sync>;

/// How requests authenticate. The two modes never mix in one request.
#[derive(Clone)]
pub enum Auth {
    /// API token, plus the user's web auth token for the private and shared databases (and for
    /// user-scoped public access).
    ApiToken {
        /// The container's API token.
        api_token: ApiToken,
        /// The signed-in user's token; `None` for anonymous public access.
        web_auth_token: Option<WebAuthToken>,
        /// Told about every rotated web auth token.
        on_rotation: Option<TokenRotationCallback>,
    },
    /// A server-to-server key: public database only, signed per request.
    ServerToServer(ServerKey),
}

impl Auth {
    /// API token and web auth token, without a rotation callback.
    pub fn web(api_token: impl Into<String>, web_auth_token: impl Into<String>) -> Self {
        Auth::ApiToken {
            api_token: ApiToken::new(api_token),
            web_auth_token: Some(WebAuthToken::new(web_auth_token)),
            on_rotation: None,
        }
    }

    /// API token only (anonymous public database access).
    pub fn api_token_only(api_token: impl Into<String>) -> Self {
        Auth::ApiToken {
            api_token: ApiToken::new(api_token),
            web_auth_token: None,
            on_rotation: None,
        }
    }

    /// Adds a rotation callback (ignored for server-to-server auth, which has no web token).
    pub fn with_rotation_callback(self, callback: TokenRotationCallback) -> Self {
        match self {
            Auth::ApiToken {
                api_token,
                web_auth_token,
                ..
            } => Auth::ApiToken {
                api_token,
                web_auth_token,
                on_rotation: Some(callback),
            },
            other => other,
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiToken {
                api_token,
                web_auth_token,
                on_rotation,
            } => f
                .debug_struct("ApiToken")
                .field("api_token", api_token)
                .field("web_auth_token", web_auth_token)
                .field("on_rotation", &on_rotation.as_ref().map(|_| "<callback>"))
                .finish(),
            Auth::ServerToServer(key) => f.debug_tuple("ServerToServer").field(key).finish(),
        }
    }
}

/// A server-to-server key: the key id the CloudKit dashboard assigned and the P-256 private key.
#[derive(Clone)]
pub struct ServerKey {
    key_id: String,
    signing_key: SigningKey,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerKey")
            .field("key_id", &self.key_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServerKey {
    /// A key from PEM text: SEC1 (`-----BEGIN EC PRIVATE KEY-----`, what `openssl ecparam -genkey`
    /// writes) or PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    pub fn from_pem(key_id: impl Into<String>, pem: &str) -> Result<Self, TransportError> {
        let key_id = checked_key_id(key_id.into())?;
        let pem = pem.trim();
        let secret = if pem.starts_with("-----BEGIN EC PRIVATE KEY-----") {
            p256::SecretKey::from_sec1_pem(pem).map_err(|_| TransportError::BadKey {
                reason: "the EC PRIVATE KEY block is not a valid P-256 key".into(),
            })?
        } else if pem.starts_with("-----BEGIN PRIVATE KEY-----") {
            p256::SecretKey::from_pkcs8_pem(pem).map_err(|_| TransportError::BadKey {
                reason: "the PRIVATE KEY block is not a valid PKCS#8 P-256 key".into(),
            })?
        } else {
            return Err(TransportError::BadKey {
                reason: "expected a PEM block `-----BEGIN EC PRIVATE KEY-----` or \
                         `-----BEGIN PRIVATE KEY-----`"
                    .into(),
            });
        };
        Ok(Self {
            key_id,
            signing_key: SigningKey::from(secret),
        })
    }

    /// A key from DER bytes (SEC1 or PKCS#8), or from PEM text given as bytes.
    pub fn from_bytes(key_id: impl Into<String>, bytes: &[u8]) -> Result<Self, TransportError> {
        if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
            let text = std::str::from_utf8(bytes).map_err(|_| TransportError::BadKey {
                reason: "the PEM text is not UTF-8".into(),
            })?;
            return Self::from_pem(key_id, text);
        }
        let key_id = checked_key_id(key_id.into())?;
        let secret = p256::SecretKey::from_sec1_der(bytes)
            .or_else(|_| p256::SecretKey::from_pkcs8_der(bytes))
            .map_err(|_| TransportError::BadKey {
                reason: "the bytes are neither a SEC1 nor a PKCS#8 DER P-256 private key".into(),
            })?;
        Ok(Self {
            key_id,
            signing_key: SigningKey::from(secret),
        })
    }

    /// A key from a PEM (or DER) file. Reads the file on tokio's blocking-aware file API.
    pub async fn from_pem_file(
        key_id: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, TransportError> {
        let path = path.as_ref();
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| TransportError::KeyFile {
                path: path.to_owned(),
                source,
            })?;
        Self::from_bytes(key_id, &bytes)
    }

    /// The key id sent in `X-Apple-CloudKit-Request-KeyID`.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half as a PEM `PUBLIC KEY` block: what the CloudKit dashboard (or the dev server)
    /// registers.
    pub fn public_key_pem(&self) -> Result<String, TransportError> {
        self.signing_key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TransportError::BadKey {
                reason: format!("could not encode the public key: {e}"),
            })
    }

    /// The public key, to verify signatures with.
    pub fn verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        *self.signing_key.verifying_key()
    }

    /// Signs one request: `date` is the ISO 8601 date (see [`iso8601_utc`]), `body` the exact bytes
    /// sent (`None` for a body-less GET), `path` the URL path without host or query.
    pub fn sign(&self, date: &str, body: Option<&[u8]>, path: &str) -> RequestSignature {
        let message = string_to_sign(date, body, path);
        let signature: Signature = self.signing_key.sign(message.as_bytes());
        RequestSignature {
            key_id: self.key_id.clone(),
            date: date.to_owned(),
            signature: BASE64.encode(signature.to_der().as_bytes()),
        }
    }
}

fn checked_key_id(key_id: String) -> Result<String, TransportError> {
    if key_id.is_empty() || !key_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TransportError::BadSetting {
            what: "server-to-server key id",
            reason: "must be non-empty printable ASCII without spaces".into(),
        });
    }
    Ok(key_id)
}

/// The text a server-to-server request signs: `"{date}:{base64(sha256(body))}:{path}"`, with an empty
/// hash field for a body-less request (what CloudKit's live server is known to accept).
///
/// ```
/// use skysync_transport::auth::string_to_sign;
/// assert_eq!(
///     string_to_sign("2016-01-25T22:15:43Z", None, "/database/1/iCloud.a/development/public/users/caller"),
///     "2016-01-25T22:15:43Z::/database/1/iCloud.a/development/public/users/caller",
/// );
/// ```
pub fn string_to_sign(date: &str, body: Option<&[u8]>, path: &str) -> String {
    let hash = body
        .map(|bytes| BASE64.encode(Sha256::digest(bytes)))
        .unwrap_or_default();
    format!("{date}:{hash}:{path}")
}

/// The three headers of a signed request.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestSignature {
    /// `X-Apple-CloudKit-Request-KeyID`.
    pub key_id: String,
    /// `X-Apple-CloudKit-Request-ISO8601Date`: the same date string that was signed.
    pub date: String,
    /// `X-Apple-CloudKit-Request-SignatureV1`: the DER signature, standard base64.
    pub signature: String,
}

impl RequestSignature {
    /// Header name of the key id.
    pub const KEY_ID_HEADER: &'static str = "X-Apple-CloudKit-Request-KeyID";
    /// Header name of the date.
    pub const DATE_HEADER: &'static str = "X-Apple-CloudKit-Request-ISO8601Date";
    /// Header name of the signature.
    pub const SIGNATURE_HEADER: &'static str = "X-Apple-CloudKit-Request-SignatureV1";

    /// The headers as (name, value) pairs, in the order above.
    pub fn headers(&self) -> [(&'static str, &str); 3] {
        [
            (Self::KEY_ID_HEADER, &self.key_id),
            (Self::DATE_HEADER, &self.date),
            (Self::SIGNATURE_HEADER, &self.signature),
        ]
    }
}

impl fmt::Debug for RequestSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSignature")
            .field("key_id", &self.key_id)
            .field("date", &self.date)
            .field("signature", &"<redacted>")
            .finish()
    }
}

/// A time as CloudKit's signing date: ISO 8601 in UTC without fractional seconds,
/// e.g. `2016-01-25T22:15:43Z`. Times before 1970 are written as 1970-01-01T00:00:00Z.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let t = UNIX_EPOCH + Duration::from_millis(1_453_760_143_999);
/// assert_eq!(skysync_transport::auth::iso8601_utc(t), "2016-01-25T22:15:43Z");
/// ```
pub fn iso8601_utc(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso8601_formats_known_instants() {
        let at = |s: u64| iso8601_utc(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00Z");
        assert_eq!(
            iso8601_utc(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
    }

    #[test]
    fn debug_output_never_shows_tokens_or_keys() {
        let key = ServerKey::from_bytes("kid", &[7u8; 32]);
        assert!(key.is_err(), "32 raw bytes are not DER");
        let auth = Auth::web("api-secret-123", "web+secret/456=");
        let text = format!("{auth:?}");
        assert!(!text.contains("api-secret-123"), "{text}");
        assert!(!text.contains("secret/456"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}

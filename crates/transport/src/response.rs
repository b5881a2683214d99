//! Reading answers: the size cap, and turning whatever arrived into a typed [`CloudError`].

use crate::client::CloudKitClient;
use reqwest::header::CONTENT_TYPE;
use skysync_model::wire::ErrorBody;
use skysync_model::{CloudError, NetworkFailure};
use std::error::Error as StdError;

/// How many bytes of a non-JSON answer an error quotes.
const EXCERPT_BYTES: usize = 120;

/// An answer read in full (within the cap).
#[derive(Debug)]
pub(crate) struct RawResponse {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The `content-type` header, or empty.
    pub(crate) content_type: String,
    /// The body, decompressed.
    pub(crate) body: Vec<u8>,
}

impl RawResponse {
    /// Reads `response`'s body chunk by chunk, stopping as soon as it exceeds `cap` bytes.
    pub(crate) async fn read(
        response: &mut reqwest::Response,
        cap: usize,
    ) -> Result<RawResponse, CloudError> {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let too_large = |declared: Option<u64>, read: usize| CloudError::ResponseTooLarge {
            status,
            cap,
            declared,
            read,
        };
        let declared = response.content_length();
        if let Some(length) = declared
            && usize::try_from(length).map_or(true, |length| length > cap)
        {
            // Refused on its word: not a byte of the body is read.
            return Err(too_large(Some(length), 0));
        }
        // A declared length (within the cap) is reserved at once; otherwise the buffer grows as
        // chunks arrive, never past the cap, so an answer costs at most `cap` bytes of memory.
        let mut body = Vec::with_capacity(
            declared
                .and_then(|length| usize::try_from(length).ok())
                .unwrap_or(0)
                .min(cap),
        );
        // Bounded: each chunk grows `body`, and past the cap the loop ends (the response is
        // dropped, which closes the connection); the request timeout bounds a server that trickles.
        while let Some(chunk) = response.chunk().await.map_err(network_error)? {
            let needed = body.len() + chunk.len();
            if needed > cap {
                return Err(too_large(None, body.len()));
            }
            if needed > body.capacity() {
                let grown = body.capacity().saturating_mul(2).max(needed).min(cap);
                body.reserve_exact(grown - body.len());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawResponse {
            status,
            content_type,
            body,
        })
    }

    /// Whether the status is 2xx.
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The typed error of a non-2xx answer: CloudKit's error body if it is one, else an unexpected
    /// answer (transient) saying what arrived.
    pub(crate) fn error(&self, client: &CloudKitClient) -> CloudError {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => CloudError::Server(body.to_server_error(self.status)),
            Err(e) => self.unexpected("not a CloudKit error body", Some(&e), client),
        }
    }

    /// An [`CloudError::UnexpectedResponse`] naming `problem`, the status, the content type and what
    /// the body looked like: JSON bodies are described by where parsing stopped (they may hold record
    /// values, which never go into errors or logs); other bodies are quoted (first bytes, escaped,
    /// tokens redacted).
    pub(crate) fn unexpected(
        &self,
        problem: &str,
        parse_error: Option<&serde_json::Error>,
        client: &CloudKitClient,
    ) -> CloudError {
        let looks_like_json = self.content_type.contains("json")
            || matches!(
                self.body.trim_ascii_start().first(),
                Some(b'{') | Some(b'[')
            );
        let what = if looks_like_json {
            match parse_error {
                Some(e) => format!("JSON that {}", describe_json_error(e)),
                None => "JSON".to_owned(),
            }
        } else {
            let end = self.body.len().min(EXCERPT_BYTES);
            let excerpt = String::from_utf8_lossy(&self.body[..end]);
            let ellipsis = if self.body.len() > end { "…" } else { "" };
            format!("starting {:?}{ellipsis}", client.redact(&excerpt).as_str())
        };
        CloudError::UnexpectedResponse {
            status: Some(self.status),
            detail: format!(
                "{problem}: HTTP {}, {}, {} bytes, {what}",
                self.status,
                describe_content_type(&self.content_type),
                self.body.len()
            ),
        }
    }
}

fn describe_content_type(content_type: &str) -> String {
    if content_type.is_empty() {
        "no content-type".to_owned()
    } else {
        format!("content-type {content_type:?}")
    }
}

/// Where and how JSON parsing failed, without quoting values from the body.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let how = match e.classify() {
        Category::Eof => "ends early (truncated)".to_owned(),
        Category::Syntax => "is malformed".to_owned(),
        Category::Io => "could not be read".to_owned(),
        Category::Data => {
            let message = e.to_string();
            // "missing field `x`" names a key, never a value; other data errors may quote values.
            if message.starts_with("missing field") {
                let key = message.split(" at line").next().unwrap_or("missing field");
                format!("lacks a key ({key})")
            } else {
                "does not have the expected shape".to_owned()
            }
        }
    };
    format!("{how} at line {} column {}", e.line(), e.column())
}

/// A failure of sending a request and waiting for its answer to begin: a timeout here means not a
/// byte of an answer arrived ([`NetworkFailure::NoAnswer`], offline); anything else is as
/// [`network_error`] says.
pub(crate) fn send_error(error: reqwest::Error) -> CloudError {
    if error.is_timeout() {
        CloudError::Network {
            kind: NetworkFailure::NoAnswer,
            detail: describe_chain(&error.without_url()),
        }
    } else {
        network_error(error)
    }
}

/// A reqwest failure as the model's network error. The URL (which carries tokens) is stripped and
/// the cause chain kept.
pub(crate) fn network_error(error: reqwest::Error) -> CloudError {
    let kind = if error.is_timeout() {
        NetworkFailure::Timeout
    } else if error.is_connect() {
        NetworkFailure::Connect
    } else if error.is_body() || error.is_decode() || error.is_request() {
        NetworkFailure::Reset
    } else {
        NetworkFailure::Other
    };
    CloudError::Network {
        kind,
        detail: describe_chain(&error.without_url()),
    }
}

/// An error and its sources, joined with `: `, skipping repeats.
fn describe_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    // Bounded: error chains are finite, and 16 levels is far past any real one.
    for _ in 0..16 {
        let Some(cause) = source else { break };
        let text = cause.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_are_described_without_quoting_values() {
        let e = serde_json::from_str::<ErrorBody>(r#"{"serverErrorCode": 5, "reason": "secret"}"#)
            .unwrap_err();
        let text = describe_json_error(&e);
        assert!(!text.contains("secret"), "{text}");
        let e = serde_json::from_str::<ErrorBody>(r#"{"reason":"secret value"#).unwrap_err();
        let text = describe_json_error(&e);
        assert!(text.starts_with("ends early"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        let e = serde_json::from_str::<ErrorBody>(r#"{"reason":"x"}"#).unwrap_err();
        assert!(describe_json_error(&e).contains("serverErrorCode"));
    }
}

//! Redaction: tokens, keys and signatures never reach a log line, a span or a metric.
//!
//! The rule, for everything skysync records:
//!
//! - Record field values are never an attribute, a field or a label: an event names *what* happened
//!   (a kind, a class, a reason from [`crate::names::values`]), never the data it happened to.
//! - Credentials are never recorded on purpose, and any text that may carry one by accident (a URL
//!   with its query, a request's headers, a server's error message) goes through [`redact`] or is
//!   wrapped in [`Redacted`] before it is logged.

use std::borrow::Cow;
use std::fmt;

/// What stands in for a removed secret.
pub const REDACTED: &str = "[redacted]";

/// Names whose value is a secret, wherever they appear as `name=value` (a query parameter),
/// `name: value` (a header) or `"name": "value"` (JSON). Matched without regard to case.
const SECRET_NAMES: [&str; 10] = [
    "ckWebAuthToken",
    "ckAPIToken",
    "ckSession",
    "webAuthToken",
    "apiToken",
    "Authorization",
    "X-Apple-CloudKit-Web-Auth-Token",
    "X-Apple-CloudKit-Request-SignatureV1",
    "X-Apple-CloudKit-Request-KeyID",
    "privateKey",
];

/// Authorization schemes: after a secret's name the scheme word is kept and what follows removed
/// (`Authorization: Bearer [redacted]`).
const SCHEMES: [&str; 2] = ["Bearer ", "Basic "];

/// Schemes recognised even without a header name before them (`Bearer abc` in an error text).
const BARE_SCHEMES: [&str; 1] = ["Bearer "];

/// Prefixes of bare tokens recognised anywhere in a text (the dev server's web auth tokens).
const TOKEN_PREFIXES: [&str; 1] = ["skysync-wat."];

/// `input` with the value of every secret removed: query parameters such as `ckWebAuthToken` and
/// `ckAPIToken`, `Authorization` and CloudKit signing headers, bearer credentials and the dev
/// server's bare web auth tokens become [`REDACTED`]. Text with nothing to remove is borrowed
/// unchanged.
pub fn redact(input: &str) -> Cow<'_, str> {
    let mut out = String::new();
    let mut copied = 0;
    let mut at = 0;
    let bytes = input.as_bytes();
    while at < bytes.len() {
        if let Some((value_start, value_end)) = secret_at(input, at) {
            out.push_str(&input[copied..value_start]);
            out.push_str(REDACTED);
            copied = value_end;
            at = value_end.max(at + 1);
        } else {
            at += 1;
        }
    }
    if copied == 0 && out.is_empty() {
        Cow::Borrowed(input)
    } else {
        out.push_str(&input[copied..]);
        Cow::Owned(out)
    }
}

/// If a secret starts at byte `at` of `input` (a secret's name and separator, a scheme word, or a
/// bare token prefix), the byte range of the secret value to remove.
fn secret_at(input: &str, at: usize) -> Option<(usize, usize)> {
    let bytes = input.as_bytes();
    if at > 0 && is_word_byte(bytes[at - 1]) {
        return None;
    }
    for prefix in TOKEN_PREFIXES {
        if starts_with_ignore_case(bytes, at, prefix) {
            let end = value_end(bytes, at);
            return Some((at, end));
        }
    }
    for scheme in BARE_SCHEMES {
        if starts_with_ignore_case(bytes, at, scheme) {
            let start = skip_spaces(bytes, at + scheme.len());
            let end = value_end(bytes, start);
            return (end > start).then_some((start, end));
        }
    }
    for name in SECRET_NAMES {
        if !starts_with_ignore_case(bytes, at, name) {
            continue;
        }
        let mut i = at + name.len();
        if i < bytes.len() && is_word_byte(bytes[i]) {
            continue;
        }
        // `"name"`: the closing quote of a JSON key.
        if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
            i += 1;
        }
        i = skip_spaces(bytes, i);
        if i >= bytes.len() || !(bytes[i] == b'=' || bytes[i] == b':') {
            continue;
        }
        i = skip_spaces(bytes, i + 1);
        if i < bytes.len() && (bytes[i] == b'"' || bytes[i] == b'\'') {
            i += 1;
        }
        // `Authorization: Bearer abc`: keep the scheme word, remove what follows it.
        for scheme in SCHEMES {
            if starts_with_ignore_case(bytes, i, scheme) {
                i = skip_spaces(bytes, i + scheme.len());
            }
        }
        let end = value_end(bytes, i);
        return Some((i, end));
    }
    None
}

/// Where a secret value starting at `start` ends: at the first delimiter of a query string, a
/// header list, a JSON string or prose.
fn value_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start;
    while i < bytes.len()
        && !matches!(
            bytes[i],
            b'&' | b'"'
                | b'\''
                | b','
                | b';'
                | b')'
                | b']'
                | b'}'
                | b'<'
                | b'>'
                | b' '
                | b'\t'
                | b'\r'
                | b'\n'
        )
    {
        i += 1;
    }
    i
}

fn skip_spaces(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t') {
        i += 1;
    }
    i
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn starts_with_ignore_case(bytes: &[u8], at: usize, word: &str) -> bool {
    bytes
        .get(at..at + word.len())
        .is_some_and(|slice| slice.eq_ignore_ascii_case(word.as_bytes()))
}

/// A value shown through [`redact`]: `tracing::warn!(error = %Redacted(&error))` logs the error's
/// text with any credential in it removed.
#[derive(Clone, Copy, Debug)]
pub struct Redacted<T>(pub T);

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0.to_string()))
    }
}

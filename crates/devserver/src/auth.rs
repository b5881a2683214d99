//! Who is calling: web auth tokens (and their rotation), server-to-server key identities, and the
//! user record names derived from them.
//!
//! The dev server has no accounts. Any non-empty `ckWebAuthToken` identifies a user, whose record name
//! is `_` followed by 32 hex digits of the SHA-256 of the token, so the same token means the same user
//! on every run. Every response to a web-auth request carries a rotated token in
//! `X-Apple-CloudKit-Web-Auth-Token`, shaped `skysync-wat.{32 hex digits}.{nonce}`; such a token names
//! its user directly (the hex digits are the user record name without its `_`), so a client that
//! switches to the rotated token stays the same user. Old tokens stay valid, as they do live.

use sha2::{Digest as _, Sha256};

/// The header a rotated web auth token is returned in.
pub const WEB_AUTH_TOKEN_HEADER: &str = "X-Apple-CloudKit-Web-Auth-Token";

/// The prefix of the web auth tokens this server hands out.
const ROTATED_PREFIX: &str = "skysync-wat.";

/// How many hex digits of a hash make a user record name.
const USER_HEX_DIGITS: usize = 32;

/// The caller of a request, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Caller {
    /// No credentials beyond the API token: may read the public database.
    Anonymous,
    /// A user signed in with a web auth token.
    WebUser {
        /// The user's record name.
        user: String,
    },
    /// A server-to-server key (public database only), acting as a user derived from the key id.
    ServerKey {
        /// The user record name derived from the key id.
        user: String,
    },
}

impl Caller {
    /// The caller's user record name, if it has one.
    pub(crate) fn user(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::WebUser { user } | Caller::ServerKey { user } => Some(user),
        }
    }
}

fn hex_digest(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A short stable checksum over `parts` (8 hex digits), for the opaque tokens this server issues.
pub(crate) fn checksum(parts: &[&[u8]]) -> String {
    let mut digest = hex_digest(parts);
    digest.truncate(8);
    digest
}

/// The user record name a web auth token identifies (stable across restarts and rotations).
pub fn web_token_user(token: &str) -> String {
    if let Some(rest) = token.strip_prefix(ROTATED_PREFIX)
        && let Some((user_hex, nonce)) = rest.split_once('.')
        && user_hex.len() == USER_HEX_DIGITS
        && user_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && !nonce.is_empty()
    {
        return format!("_{user_hex}");
    }
    let mut digest = hex_digest(&[b"web", token.as_bytes()]);
    digest.truncate(USER_HEX_DIGITS);
    format!("_{digest}")
}

/// A fresh web auth token for `user` (a name from [`web_token_user`]), as sent on each response.
pub(crate) fn rotated_web_token(user: &str) -> String {
    let user_hex = user.strip_prefix('_').unwrap_or(user);
    format!(
        "{ROTATED_PREFIX}{user_hex}.{}",
        uuid::Uuid::new_v4().simple()
    )
}

/// A brand-new web auth token for a new user (what the dev server's sign-in page hands out).
pub(crate) fn new_web_token() -> String {
    let mut digest = hex_digest(&[b"new", uuid::Uuid::new_v4().as_bytes()]);
    digest.truncate(USER_HEX_DIGITS);
    format!("{ROTATED_PREFIX}{digest}.{}", uuid::Uuid::new_v4().simple())
}

/// The user record name a server-to-server key acts as (stable across restarts).
pub fn server_key_user(key_id: &str) -> String {
    let mut digest = hex_digest(&[b"s2s", key_id.as_bytes()]);
    digest.truncate(USER_HEX_DIGITS);
    format!("_{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_the_same_user_every_time_and_after_rotation() {
        let user = web_token_user("my token");
        assert_eq!(user, web_token_user("my token"));
        assert_ne!(user, web_token_user("another token"));
        assert!(user.starts_with('_') && user.len() == 1 + USER_HEX_DIGITS);
        let rotated = rotated_web_token(&user);
        assert_ne!(rotated, rotated_web_token(&user));
        assert_eq!(web_token_user(&rotated), user);
        assert_eq!(web_token_user(&rotated_web_token(&user)), user);
    }

    #[test]
    fn a_token_that_only_looks_rotated_is_hashed_like_any_other() {
        let fake = "skysync-wat.xyz.1";
        assert_ne!(web_token_user(fake), "_xyz");
        assert_eq!(web_token_user(fake).len(), 1 + USER_HEX_DIGITS);
    }

    #[test]
    fn server_keys_and_web_tokens_name_different_users() {
        assert_ne!(server_key_user("k"), web_token_user("k"));
    }

    #[test]
    fn each_sign_in_token_names_a_new_user_who_keeps_it_through_rotation() {
        let fresh = new_web_token();
        let user = web_token_user(&fresh);
        assert_ne!(user, web_token_user(&new_web_token()));
        assert_eq!(
            format!("{ROTATED_PREFIX}{}.", &user[1..]),
            fresh[..ROTATED_PREFIX.len() + USER_HEX_DIGITS + 1],
            "the token names its user directly"
        );
        assert_eq!(web_token_user(&rotated_web_token(&user)), user);
    }
}

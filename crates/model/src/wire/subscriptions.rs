//! Subscriptions, notification tokens, users and the notification long-poll.

use super::{WireZoneId, retry_after};
use crate::error::{ErrorScope, ServerError, ServerErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `zone` or `query` subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SubscriptionType {
    /// Fires on any change in a zone.
    Zone,
    /// Fires on records matching a query.
    Query,
}

/// A subscription dictionary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// The zone (zone subscriptions).
    #[serde(rename = "zoneID", default, skip_serializing_if = "Option::is_none")]
    pub zone_id: Option<WireZoneId>,
    /// The subscription's id.
    #[serde(rename = "subscriptionID")]
    pub subscription_id: String,
    /// Zone or query.
    #[serde(rename = "subscriptionType")]
    pub subscription_type: SubscriptionType,
    /// The query (query subscriptions), kept as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Value>,
    /// `create`, `update`, `delete` (query subscriptions).
    #[serde(rename = "firesOn", default, skip_serializing_if = "Option::is_none")]
    pub fires_on: Option<Vec<String>>,
    /// Fire once, then delete itself.
    #[serde(rename = "firesOnce", default, skip_serializing_if = "Option::is_none")]
    pub fires_once: Option<bool>,
    /// How the notification is presented, kept as JSON.
    #[serde(
        rename = "notificationInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub notification_info: Option<Value>,
    /// Query subscriptions across all zones.
    #[serde(rename = "zoneWide", default, skip_serializing_if = "Option::is_none")]
    pub zone_wide: Option<bool>,
}

/// `create`, `update` or `delete` a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SubscriptionOperationType {
    /// Create (idempotent for the same id).
    Create,
    /// Update.
    Update,
    /// Delete.
    Delete,
}

/// One operation of `subscriptions/modify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionOperation {
    /// What to do.
    #[serde(rename = "operationType")]
    pub operation_type: SubscriptionOperationType,
    /// To which subscription.
    pub subscription: Subscription,
}

/// The body of `subscriptions/modify`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModifySubscriptionsRequest {
    /// The operations, in order.
    pub operations: Vec<SubscriptionOperation>,
}

/// A per-subscription error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionFetchError {
    /// The subscription.
    #[serde(
        rename = "subscriptionID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subscription_id: Option<String>,
    /// The explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The code.
    #[serde(rename = "serverErrorCode")]
    pub server_error_code: ServerErrorCode,
    /// Seconds to wait before retrying.
    #[serde(
        rename = "retryAfter",
        default,
        skip_serializing_if = "Option::is_none",
        with = "retry_after"
    )]
    pub retry_after: Option<u64>,
    /// Where to sign in.
    #[serde(
        rename = "redirectURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub redirect_url: Option<String>,
}

impl SubscriptionFetchError {
    /// The typed, item-scoped error, as carried by a response with the given HTTP status.
    pub fn to_server_error(&self, http_status: u16) -> ServerError {
        ServerError::from_wire_parts(
            &self.server_error_code,
            ErrorScope::Item,
            http_status,
            self.reason.as_deref(),
            self.retry_after,
            self.redirect_url.as_deref(),
            None,
        )
    }
}

/// One subscription to look up: `{subscriptionID}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRef {
    /// The subscription's id.
    #[serde(rename = "subscriptionID")]
    pub subscription_id: String,
}

/// The body of `subscriptions/lookup`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupSubscriptionsRequest {
    /// The subscriptions to look up.
    pub subscriptions: Vec<SubscriptionRef>,
}

/// One entry of a `subscriptions` array: a subscription, or its error (tried first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubscriptionResult {
    /// The item failed.
    Error(SubscriptionFetchError),
    /// The subscription.
    Subscription(Subscription),
}

/// The answer to `subscriptions/modify`, `/list` and `/lookup`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionsResponse {
    /// One entry per subscription.
    pub subscriptions: Vec<SubscriptionResult>,
}

/// The body of `tokens/create`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreateRequest {
    /// `development` or `production`.
    #[serde(rename = "apnsEnvironment")]
    pub apns_environment: String,
}

/// The answer to `tokens/create`: a push token and the URL to long-poll for notifications.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreateResponse {
    /// `development` or `production`.
    #[serde(rename = "apnsEnvironment")]
    pub apns_environment: String,
    /// The push token.
    #[serde(rename = "apnsToken")]
    pub apns_token: String,
    /// Where to long-poll for notifications.
    #[serde(rename = "webcourierURL")]
    pub webcourier_url: String,
}

/// The body of `tokens/register` (and, on skysync's dev server, its answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRegisterRequest {
    /// `development` or `production`.
    #[serde(rename = "apnsEnvironment")]
    pub apns_environment: String,
    /// The push token to register.
    #[serde(rename = "apnsToken")]
    pub apns_token: String,
}

/// A user identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserIdentity {
    /// The user's record name (`_…`).
    #[serde(rename = "userRecordName")]
    pub user_record_name: String,
    /// How the user can be looked up, kept as JSON.
    #[serde(
        rename = "lookupInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lookup_info: Option<Value>,
    /// Name parts, kept as JSON.
    #[serde(
        rename = "nameComponents",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub name_components: Option<Value>,
}

/// The answer to `users/caller`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersResponse {
    /// The identities (one for `users/caller`).
    pub users: Vec<UserIdentity>,
}

/// One notification delivered by a webcourier long-poll: a subscription fired for a zone.
///
/// CloudKit's courier payload is not documented for web clients; this is the shape skysync's dev server
/// sends and skysync's transport reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneNotification {
    /// The notification's id.
    #[serde(rename = "notificationID")]
    pub notification_id: String,
    /// The subscription that fired.
    #[serde(rename = "subscriptionID")]
    pub subscription_id: String,
    /// The zone that changed.
    #[serde(rename = "zoneID")]
    pub zone_id: WireZoneId,
}

/// The answer to a webcourier long-poll: the notifications since the last poll (empty on timeout).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CourierPoll {
    /// The notifications.
    pub notifications: Vec<ZoneNotification>,
}

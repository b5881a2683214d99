//! `subscriptions/modify`, `/list` and `/lookup`, and which subscriptions a change fires.

use std::collections::HashSet;

use axum::http::StatusCode;
use skysync_model::ServerErrorCode;
use skysync_model::wire::{
    LookupSubscriptionsRequest, ModifySubscriptionsRequest, Subscription, SubscriptionFetchError,
    SubscriptionOperationType, SubscriptionResult, SubscriptionType, SubscriptionsResponse,
    ZoneNotification,
};

use crate::records::{Planned, within_limit};
use crate::reply::Refusal;
use crate::state::{Changes, Database, DbKey, State, StoredSubscription, TouchedZones, Write};

fn subscription_error(id: &str, code: ServerErrorCode, reason: &str) -> SubscriptionResult {
    SubscriptionResult::Error(SubscriptionFetchError {
        subscription_id: Some(id.to_owned()),
        reason: Some(reason.to_owned()),
        server_error_code: code,
        retry_after: None,
        redirect_url: None,
    })
}

/// `subscriptions/list`: the caller's subscriptions in this database.
pub(crate) fn list(db: &Database, subscriber: &str) -> SubscriptionsResponse {
    SubscriptionsResponse {
        subscriptions: db
            .subscriptions
            .values()
            .filter(|s| s.subscriber == subscriber)
            .map(|s| SubscriptionResult::Subscription(s.subscription.clone()))
            .collect(),
    }
}

/// `subscriptions/lookup`: each subscription, or `NOT_FOUND` in its place.
pub(crate) fn lookup(
    db: &Database,
    subscriber: &str,
    request: &LookupSubscriptionsRequest,
) -> Result<SubscriptionsResponse, Refusal> {
    within_limit(request.subscriptions.len(), "subscriptions")?;
    Ok(SubscriptionsResponse {
        subscriptions: request
            .subscriptions
            .iter()
            .map(|wanted| {
                match db
                    .subscriptions
                    .get(&(subscriber.to_owned(), wanted.subscription_id.clone()))
                {
                    Some(stored) => SubscriptionResult::Subscription(stored.subscription.clone()),
                    None => subscription_error(
                        &wanted.subscription_id,
                        ServerErrorCode::NotFound,
                        "subscription not found",
                    ),
                }
            })
            .collect(),
    })
}

/// Checks a subscription definition; the reason it is refused, if it is.
fn invalid(db: &Database, subscription: &Subscription) -> Option<(ServerErrorCode, String)> {
    if subscription.subscription_id.is_empty() {
        return Some((
            ServerErrorCode::BadRequest,
            "subscriptionID must not be empty".into(),
        ));
    }
    if let Some(zone) = &subscription.zone_id
        && db.live_zone(&zone.zone_name).is_none()
    {
        return Some((
            ServerErrorCode::ZoneNotFound,
            format!("zone '{}' does not exist", zone.zone_name),
        ));
    }
    if subscription.subscription_type == SubscriptionType::Query
        && query_type(subscription).is_none()
    {
        return Some((
            ServerErrorCode::BadRequest,
            "a query subscription needs a query with a recordType".into(),
        ));
    }
    None
}

fn query_type(subscription: &Subscription) -> Option<&str> {
    subscription.query.as_ref()?.get("recordType")?.as_str()
}

/// `subscriptions/modify`: creates (idempotently per id), updates and deletes, in order.
pub(crate) fn modify(
    db: &Database,
    key: &DbKey,
    subscriber: &str,
    request: &ModifySubscriptionsRequest,
) -> Result<Planned<SubscriptionsResponse>, Refusal> {
    within_limit(request.operations.len(), "operations")?;
    let mut seen = HashSet::new();
    for op in &request.operations {
        if !seen.insert(op.subscription.subscription_id.as_str()) {
            return Err(Refusal::bad_request(format!(
                "more than one operation on subscription '{}' in one request",
                op.subscription.subscription_id
            )));
        }
    }
    let mut changes = Changes::new(key, db);
    let mut subscriptions = Vec::with_capacity(request.operations.len());
    for op in &request.operations {
        let subscription = &op.subscription;
        let id = subscription.subscription_id.as_str();
        let existing = db
            .subscriptions
            .get(&(subscriber.to_owned(), id.to_owned()));
        subscriptions.push(match op.operation_type {
            SubscriptionOperationType::Create | SubscriptionOperationType::Update => {
                if op.operation_type == SubscriptionOperationType::Update && existing.is_none() {
                    subscription_error(id, ServerErrorCode::NotFound, "subscription not found")
                } else if let Some((code, reason)) = invalid(db, subscription) {
                    subscription_error(id, code, &reason)
                } else {
                    changes.push(Write::Subscription {
                        db: key.clone(),
                        stored: StoredSubscription {
                            subscriber: subscriber.to_owned(),
                            subscription: subscription.clone(),
                        },
                    });
                    SubscriptionResult::Subscription(subscription.clone())
                }
            }
            SubscriptionOperationType::Delete => match existing {
                None => subscription_error(id, ServerErrorCode::NotFound, "subscription not found"),
                Some(stored) => {
                    changes.push(Write::RemoveSubscription {
                        db: key.clone(),
                        subscriber: subscriber.to_owned(),
                        id: id.to_owned(),
                    });
                    SubscriptionResult::Subscription(stored.subscription.clone())
                }
            },
        });
    }
    Ok(Planned {
        status: StatusCode::OK,
        body: SubscriptionsResponse { subscriptions },
        changes: Some(changes),
        touched: TouchedZones::new(),
    })
}

/// Whether `subscription` fires for a change to zone `zone` that wrote records of `types` (none for
/// a zone deletion).
fn fires(
    subscription: &Subscription,
    zone: &str,
    types: &std::collections::BTreeSet<String>,
) -> bool {
    if subscription
        .zone_id
        .as_ref()
        .is_some_and(|z| z.zone_name != zone)
    {
        return false;
    }
    match subscription.subscription_type {
        SubscriptionType::Zone => true,
        SubscriptionType::Query => query_type(subscription).is_some_and(|t| types.contains(t)),
    }
}

/// The notifications a change to `touched` zones of database `key` sends, by courier token.
pub(crate) fn notifications(
    state: &State,
    key: &DbKey,
    touched: &TouchedZones,
) -> Vec<(String, ZoneNotification)> {
    let Some(db) = state.databases.get(key) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for stored in db.subscriptions.values() {
        for (zone, types) in touched {
            if !fires(&stored.subscription, zone, types) {
                continue;
            }
            for (token, owner) in &state.courier_tokens {
                if owner.container == key.container
                    && owner.environment == key.environment
                    && owner.user == stored.subscriber
                {
                    out.push((
                        token.clone(),
                        ZoneNotification {
                            notification_id: uuid::Uuid::new_v4().to_string(),
                            subscription_id: stored.subscription.subscription_id.clone(),
                            zone_id: key.wire_zone_id(zone),
                        },
                    ));
                }
            }
        }
    }
    out
}

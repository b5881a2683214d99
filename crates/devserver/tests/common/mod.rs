//! A client for the dev server over real HTTP on 127.0.0.1, shared by the scenario tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    missing_docs
)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use skysync_devserver::{DevServer, ServerConfig};

pub const CONTAINER: &str = "iCloud.com.example.skysync";

/// A running server and a client for it, acting as one signed-in user.
pub struct Harness {
    pub server: DevServer,
    pub client: reqwest::Client,
    /// The web auth token sent by [`Harness::post`] and [`Harness::get`].
    pub token: String,
}

/// One answer: status, JSON body and headers.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The `records` array.
    pub fn records(&self) -> &Vec<Value> {
        self.body["records"]
            .as_array()
            .unwrap_or_else(|| panic!("no records array in {}", self.body))
    }

    /// The `records[i]` entry.
    pub fn record(&self, i: usize) -> &Value {
        &self.records()[i]
    }

    /// Asserts a request-level CloudKit error with `code` and `status`.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["serverErrorCode"], code, "body: {}", self.body);
        assert!(
            self.body["uuid"].is_string(),
            "error body needs a uuid: {}",
            self.body
        );
        assert!(
            self.body["reason"].is_string(),
            "error body needs a reason: {}",
            self.body
        );
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Percent-encodes a web auth token for the query string.
pub fn encode(token: &str) -> String {
    token
        .replace('%', "%25")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
        .replace('&', "%26")
        .replace(' ', "%20")
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with_config(ServerConfig::default()).await
    }

    pub async fn with_config(config: ServerConfig) -> Harness {
        let server = DevServer::start(config).await.unwrap();
        Harness {
            server,
            client: client(),
            token: format!("user-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The URL of `operation` in `database`, with the harness's web token (or none if `token` is empty).
    pub fn url_as(&self, token: &str, database: &str, operation: &str) -> String {
        let mut url = format!(
            "{}/database/1/{CONTAINER}/development/{database}/{operation}?ckAPIToken=api",
            self.server.base_url()
        );
        if !token.is_empty() {
            url.push_str("&ckWebAuthToken=");
            url.push_str(&encode(token));
        }
        url
    }

    pub async fn send_raw(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Answer {
        let mut request = self
            .client
            .request(method, url)
            .header("content-type", "application/json; charset=utf-8");
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {status}: {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn post_as(
        &self,
        token: &str,
        database: &str,
        operation: &str,
        body: Value,
    ) -> Answer {
        let url = self.url_as(token, database, operation);
        self.send_raw(Method::POST, &url, Some(serde_json::to_vec(&body).unwrap()))
            .await
    }

    pub async fn get_as(&self, token: &str, database: &str, operation: &str) -> Answer {
        let url = self.url_as(token, database, operation);
        self.send_raw(Method::GET, &url, None).await
    }

    /// POST to the private database as the harness's user.
    pub async fn post(&self, operation: &str, body: Value) -> Answer {
        self.post_as(&self.token.clone(), "private", operation, body)
            .await
    }

    /// GET from the private database as the harness's user.
    pub async fn get(&self, operation: &str) -> Answer {
        self.get_as(&self.token.clone(), "private", operation).await
    }

    pub async fn create_zone(&self, zone: &str) {
        let answer = self
            .post(
                "zones/modify",
                json!({"operations": [{"operationType": "create", "zone": {"zoneID": {"zoneName": zone}}}]}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["zones"][0]["zoneID"]["zoneName"], zone);
    }

    pub async fn delete_zone(&self, zone: &str) -> Answer {
        self.post(
            "zones/modify",
            json!({"operations": [{"operationType": "delete", "zone": {"zoneID": {"zoneName": zone}}}]}),
        )
        .await
    }

    /// `records/modify` with `operations` in `zone` (default atomicity).
    pub async fn modify(&self, zone: &str, operations: Value) -> Answer {
        self.post(
            "records/modify",
            json!({"zoneID": {"zoneName": zone}, "operations": operations}),
        )
        .await
    }

    /// Creates a `Note` named `name` with a `title` and returns its change tag.
    pub async fn create_note(&self, zone: &str, name: &str, title: &str) -> String {
        let answer = self
            .modify(
                zone,
                json!([{"operationType": "create", "record": {
                    "recordName": name, "recordType": "Note",
                    "fields": {"title": {"value": title}}
                }}]),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        tag_of(answer.record(0))
    }

    /// Looks up one record in `zone`.
    pub async fn lookup(&self, zone: &str, name: &str) -> Value {
        let answer = self
            .post(
                "records/lookup",
                json!({"zoneID": {"zoneName": zone}, "records": [{"recordName": name}]}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.record(0).clone()
    }

    /// `changes/zone` for one zone from `token` with `limit`.
    pub async fn zone_changes(&self, zone: &str, token: Option<&str>, limit: Option<u32>) -> Value {
        let mut query = json!({"zoneID": {"zoneName": zone}});
        if let Some(token) = token {
            query["syncToken"] = json!(token);
        }
        if let Some(limit) = limit {
            query["resultsLimit"] = json!(limit);
        }
        let answer = self.post("changes/zone", json!({"zones": [query]})).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["zones"][0].clone()
    }
}

/// The `recordChangeTag` of a record entry.
pub fn tag_of(record: &Value) -> String {
    record["recordChangeTag"]
        .as_str()
        .unwrap_or_else(|| panic!("no recordChangeTag in {record}"))
        .to_owned()
}

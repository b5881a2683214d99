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
    /// Reads a response whose body must be JSON.
    pub async fn read(response: reqwest::Response) -> Answer {
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

    /// Asserts a CloudKit error as a client meets it on the wire: `status`, a JSON content type,
    /// `code`, a non-empty `uuid` and a `reason`. `case` names the request in failure messages.
    /// Returns the error body.
    pub fn assert_cloudkit_error(&self, status: StatusCode, code: &str, case: &str) -> &Value {
        let body = &self.body;
        assert_eq!(self.status, status, "{case}: {body}");
        let content_type = self
            .headers
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "{case}: {content_type}"
        );
        assert_eq!(body["serverErrorCode"], code, "{case}: {body}");
        assert!(
            body["uuid"].as_str().is_some_and(|uuid| !uuid.is_empty()),
            "{case}: {body}"
        );
        assert!(body["reason"].is_string(), "{case}: {body}");
        body
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

/// The path of `operation` in `database` of the test container's development environment.
pub fn database_path(database: &str, operation: &str) -> String {
    format!("/database/1/{CONTAINER}/development/{database}/{operation}")
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

    /// The server's URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    /// The URL of `operation` in `database`, with web token `token` (or none if `token` is empty).
    pub fn url_as(&self, token: &str, database: &str, operation: &str) -> String {
        with_web_token(
            self.url(&format!(
                "{}?ckAPIToken=api",
                database_path(database, operation)
            )),
            token,
        )
    }

    /// The URL of the notification-token `operation` (`create`, `register`), with web token
    /// `token` (or none if `token` is empty).
    pub fn tokens_url_as(&self, token: &str, operation: &str) -> String {
        with_web_token(
            self.url(&format!(
                "/device/1/{CONTAINER}/development/tokens/{operation}?ckAPIToken=api"
            )),
            token,
        )
    }

    /// The URL of the fault endpoint, `/_dev/faults`.
    pub fn faults_url(&self) -> String {
        self.url("/_dev/faults")
    }

    /// Sends `body` (if any) with a JSON content type and the extra `headers`, and returns the
    /// response unread, for answers that may not be JSON.
    pub async fn respond(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, url)
            .header("content-type", "application/json; charset=utf-8");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        request
            .send()
            .await
            .expect("an answer, not a dropped connection")
    }

    /// Like [`Harness::send_raw`], with extra `headers`.
    pub async fn send_with_headers(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Answer {
        Answer::read(self.respond(method, url, headers, body).await).await
    }

    /// Sends `body` (if any, any bytes) to `url` and reads the JSON answer.
    pub async fn send_raw(&self, method: Method, url: &str, body: Option<Vec<u8>>) -> Answer {
        self.send_with_headers(method, url, &[], body).await
    }

    /// Sends `body` (if any, any bytes) to `operation` in the private database as the harness's user.
    pub async fn send(&self, method: Method, operation: &str, body: Option<Vec<u8>>) -> Answer {
        let url = self.url_as(&self.token, "private", operation);
        self.send_raw(method, &url, body).await
    }

    /// POSTs `body` (any bytes, not necessarily JSON) to `operation` in the private database as the
    /// harness's user.
    pub async fn post_bytes(&self, operation: &str, body: impl Into<Vec<u8>>) -> Answer {
        self.send(Method::POST, operation, Some(body.into())).await
    }

    /// Arms one fault with `POST /_dev/faults` and returns the armed fault as the server lists it.
    pub async fn arm_fault(&self, fault: Value) -> Value {
        let answer = self
            .send_raw(
                Method::POST,
                &self.faults_url(),
                Some(fault.to_string().into_bytes()),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "arming {fault}: {}",
            answer.body
        );
        answer.body
    }

    /// The faults still armed, as `GET /_dev/faults` lists them.
    pub async fn armed_faults(&self) -> Vec<Value> {
        let answer = self.send_raw(Method::GET, &self.faults_url(), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["faults"].as_array().cloned().unwrap()
    }

    /// `zones/list` as the harness's user answers 200 with the default zone; `context` says when, for
    /// failure messages.
    pub async fn assert_lists_default_zone(&self, context: &str) {
        let list = self.get("zones/list").await;
        assert_eq!(list.status, StatusCode::OK, "zones/list {context}");
        assert!(
            list.body["zones"].as_array().is_some_and(|zones| zones
                .iter()
                .any(|zone| zone["zoneID"]["zoneName"] == "_defaultZone")),
            "{context}: {}",
            list.body
        );
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

/// `url` with `&ckWebAuthToken=` and `token` encoded appended, or `url` as it is if `token` is empty.
fn with_web_token(mut url: String, token: &str) -> String {
    if !token.is_empty() {
        url.push_str("&ckWebAuthToken=");
        url.push_str(&encode(token));
    }
    url
}

/// The `recordChangeTag` of a record entry.
pub fn tag_of(record: &Value) -> String {
    record["recordChangeTag"]
        .as_str()
        .unwrap_or_else(|| panic!("no recordChangeTag in {record}"))
        .to_owned()
}

//! The dev server's request handling: any body sent to any CloudKit endpoint is answered with JSON
//! — a result or one of CloudKit's own error bodies — and never by a handler that panicked (the
//! server's last line of defence answers those `500` with a reason this target looks for), and the
//! server keeps serving.
//!
//! One dev server on 127.0.0.1 (started once, in memory) takes every input; the first byte
//! chooses the endpoint, the second the database and the method, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skysync_devserver::{DevServer, ServerConfig};
use std::sync::OnceLock;
use std::time::Duration;

const OPERATIONS: &[&str] = &[
    "records/modify",
    "records/lookup",
    "records/query",
    "records/changes",
    "zones/list",
    "zones/lookup",
    "zones/modify",
    "zones/changes",
    "changes/database",
    "changes/zone",
    "subscriptions/list",
    "subscriptions/lookup",
    "subscriptions/modify",
    "users/caller",
    "users/current",
    "tokens/create",
    "tokens/register",
];
const DATABASES: &[&str] = &["private", "public", "shared"];
/// What the server's panic guard answers: seeing it means a handler panicked.
const PANICKED: &str = "the dev server failed while handling this request";

struct World {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    // Kept so the server lives as long as the process.
    _server: DevServer,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime
            .block_on(DevServer::start(ServerConfig::default()))
            .unwrap();
        World {
            base: server.base_url(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            runtime,
            _server: server,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let [operation, how, body @ ..] = data else {
        return;
    };
    let world = world();
    let operation = OPERATIONS[usize::from(*operation) % OPERATIONS.len()];
    let database = DATABASES[usize::from(*how) % DATABASES.len()];
    let url = format!(
        "{}/database/1/iCloud.fuzz/development/{database}/{operation}?ckAPIToken=api&ckWebAuthToken=fuzz-user",
        world.base
    );
    world.runtime.block_on(async {
        let request = if how & 0x80 == 0 {
            world.http.post(&url).body(body.to_vec())
        } else {
            world.http.get(&url)
        };
        let response = request.send().await.expect("the dev server stopped answering");
        let status = response.status().as_u16();
        let text = response.text().await.expect("the answer was cut off");
        assert!(!text.contains(PANICKED), "a handler panicked on {operation}: {status}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_ok(),
            "{operation} answered {status} with a body that is not JSON: {text:.200}"
        );
    });
});

//! Test helpers: a one-shot HTTP listener on 127.0.0.1 that records what the client sends and
//! answers with canned responses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as it arrived.
#[derive(Debug)]
pub struct Captured {
    /// `GET`, `POST`.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// For a held answer: whether the client closed the connection while waiting.
    pub closed_by_client: bool,
}

impl Captured {
    /// A header's value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }

    /// The query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// A canned answer: status, content type, extra headers, body.
pub struct Canned {
    /// The status.
    pub status: u16,
    /// The content type.
    pub content_type: &'static str,
    /// More headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
    /// Never answer: hold the connection until the client closes it.
    pub hold: bool,
}

impl Canned {
    /// A 200 JSON answer.
    pub fn ok(body: &str) -> Self {
        Canned::json(200, body)
    }

    /// A JSON answer with `status`.
    pub fn json(status: u16, body: &str) -> Self {
        Canned {
            status,
            content_type: "application/json; charset=UTF-8",
            headers: Vec::new(),
            body: body.to_owned(),
            hold: false,
        }
    }

    /// An answer that never comes: the listener waits until the client hangs up.
    pub fn hold() -> Self {
        Canned {
            hold: true,
            ..Canned::ok("")
        }
    }
}

/// Serves one connection per canned answer, in order, and returns what each request carried.
pub async fn capture(answers: Vec<Canned>) -> (String, tokio::task::JoinHandle<Vec<Captured>>) {
    let (base, task, _arrivals) = capture_with_arrivals(answers).await;
    (base, task)
}

/// Like [`capture`], and also reports the index of each request as soon as it has arrived (before
/// it is answered or held).
pub async fn capture_with_arrivals(
    answers: Vec<Canned>,
) -> (
    String,
    tokio::task::JoinHandle<Vec<Captured>>,
    tokio::sync::mpsc::UnboundedReceiver<usize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (arrived, arrivals) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for (index, answer) in answers.into_iter().enumerate() {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = Vec::new();
            let header_end = loop {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before sending a request");
                buffer.extend_from_slice(&chunk[..n]);
                if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                assert!(buffer.len() < 1 << 20, "request head too large");
            };
            let head = String::from_utf8(buffer[..header_end].to_vec()).unwrap();
            let mut lines = head.split("\r\n");
            let mut request_line = lines.next().unwrap().split(' ');
            let method = request_line.next().unwrap().to_owned();
            let target = request_line.next().unwrap().to_owned();
            let headers: Vec<(String, String)> = lines
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (n, v) = l.split_once(':').unwrap();
                    (n.trim().to_owned(), v.trim().to_owned())
                })
                .collect();
            let length: usize = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map_or(0, |(_, v)| v.parse().unwrap());
            let mut body = buffer[header_end..].to_vec();
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed mid-body");
                body.extend_from_slice(&chunk[..n]);
            }
            let _ = arrived.send(index);
            if answer.hold {
                let mut rest = [0u8; 1024];
                let closed = tokio::time::timeout(std::time::Duration::from_secs(60), async {
                    // Bounded by the timeout; a read of 0 bytes is the client hanging up.
                    loop {
                        match socket.read(&mut rest).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                })
                .await
                .is_ok();
                seen.push(Captured {
                    method,
                    target,
                    headers,
                    body,
                    closed_by_client: closed,
                });
                continue;
            }
            let mut reply = format!(
                "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n",
                answer.status,
                answer.content_type,
                answer.body.len()
            );
            for (name, value) in &answer.headers {
                reply.push_str(&format!("{name}: {value}\r\n"));
            }
            reply.push_str("\r\n");
            reply.push_str(&answer.body);
            socket.write_all(reply.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
            seen.push(Captured {
                method,
                target,
                headers,
                body,
                closed_by_client: false,
            });
        }
        seen
    });
    (base, task, arrivals)
}

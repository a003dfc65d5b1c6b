//! One plain HTTP/1.1 request, read to the end.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::WAIT;

/// A parsed HTTP answer.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// The `Content-Type` header (empty when absent).
    pub content_type: String,
    /// The body, as text.
    pub body: String,
}

impl HttpReply {
    /// The body as JSON; panics if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// One HTTP/1.1 request over a fresh TCP connection (`Connection: close`,
/// empty body).
pub async fn http_request(addr: SocketAddr, method: &str, target: &str) -> HttpReply {
    tokio::time::timeout(WAIT, async {
        let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.expect("send a request");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read the reply");
        let raw = String::from_utf8(raw).expect("a UTF-8 reply");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a reply head");
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let content_type = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        HttpReply {
            status,
            content_type,
            body: body.to_owned(),
        }
    })
    .await
    .expect("http request timed out")
}

/// `GET target`.
pub async fn http_get(addr: SocketAddr, target: &str) -> HttpReply {
    http_request(addr, "GET", target).await
}

//! `GET /metrics` of a hub we started (plain HTTP on its WebSocket port),
//! and one value out of the OpenMetrics text: how the bench sees a
//! cluster form (`link_hub_cluster_hubs`) and counts what crosses NATS
//! (`link_hub_cluster_published_total`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest wait for one scrape.
const SCRAPE_WAIT: Duration = Duration::from_secs(5);

/// Largest response read (a hub's metrics are a few KiB).
const MAX_RESPONSE: u64 = 1 << 20;

/// The `/metrics` text of the hub at `ws://HOST:PORT[/path]`.
pub(crate) async fn metrics(hub_url: &str) -> Result<String, String> {
    let addr = authority(hub_url).ok_or_else(|| format!("no host:port in {hub_url}"))?;
    let fetch = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        // HTTP/1.0: the response ends when the hub closes, never chunked.
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut body = Vec::new();
        s.take(MAX_RESPONSE)
            .read_to_end(&mut body)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        Ok::<_, String>(body)
    };
    let raw = tokio::time::timeout(SCRAPE_WAIT, fetch)
        .await
        .map_err(|_| format!("{addr}: no /metrics answer within {SCRAPE_WAIT:?}"))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return Err(format!(
            "{addr}: /metrics answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_owned())
}

/// `HOST:PORT` of `ws://HOST:PORT/path` (or `wss://`, `http://`).
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next()?;
    (!host.is_empty()).then_some(host)
}

/// The value of the unlabelled sample `name` in OpenMetrics text.
pub(crate) fn value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let v = rest.strip_prefix(' ')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_unlabelled_samples_by_exact_name() {
        let text = "# HELP link_hub_cluster_hubs Other hubs\n\
                    # TYPE link_hub_cluster_hubs gauge\n\
                    link_hub_cluster_hubs 2\n\
                    link_hub_cluster_published_total 1234\n\
                    link_hub_cluster_published_created 1.7e9\n\
                    # EOF\n";
        assert_eq!(value(text, "link_hub_cluster_hubs"), Some(2.0));
        assert_eq!(
            value(text, "link_hub_cluster_published_total"),
            Some(1234.0)
        );
        assert_eq!(value(text, "link_hub_cluster_published"), None);
        assert_eq!(value(text, "link_hub_cluster_remote_peers"), None);
    }

    #[test]
    fn finds_host_and_port() {
        assert_eq!(authority("ws://127.0.0.1:4000"), Some("127.0.0.1:4000"));
        assert_eq!(
            authority("ws://127.0.0.1:4000/link"),
            Some("127.0.0.1:4000")
        );
        assert_eq!(authority("ws://"), None);
    }
}

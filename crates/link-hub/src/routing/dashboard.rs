//! What the live dashboard (`/ui`, `server/dashboard.rs`) reads of the
//! table: the peers with their status and connection time, the topics with
//! their subscriber counts and message counters, and a copy of the stats.
//!
//! Nothing here runs unless a dashboard is open: the table only keeps two
//! plain counters per topic (bumped where a publish is routed) and a
//! revision number (bumped on membership, status and subscription
//! changes), which the driver compares between batches while a dashboard
//! watches, so a change is pushed to the page at once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Routing, TableStats};

/// Peers and topics listed in one view at most (the counts are always
/// whole): a view is built every second per open page.
pub(crate) const MAX_ROWS: usize = 500;

/// A status is shown as its compact JSON text, cut to this many bytes.
pub(crate) const MAX_STATUS_BYTES: usize = 160;

/// One copy of what the dashboard shows of the table.
#[derive(Debug, Default)]
pub(crate) struct DashboardView {
    /// Registered peers, in registration order (at most [`MAX_ROWS`]).
    pub(crate) peers: Vec<PeerRow>,
    /// How many peers there are.
    pub(crate) peer_count: usize,
    /// Topics with a subscriber, by name (at most [`MAX_ROWS`]).
    pub(crate) topics: Vec<TopicRow>,
    /// How many topics there are.
    pub(crate) topic_count: usize,
    /// The counters, histograms and gauges `/metrics` reads.
    pub(crate) stats: TableStats,
}

/// A registered peer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PeerRow {
    pub(crate) kind: Arc<str>,
    /// The socket's remote address, when the transport has one.
    pub(crate) remote: Option<SocketAddr>,
    /// Hub wall clock ms at registration.
    pub(crate) connected_at: u64,
    /// Its last status as compact JSON, cut to [`MAX_STATUS_BYTES`] (with
    /// `…` when cut); `None` before its first `status.update`.
    pub(crate) status: Option<String>,
    /// Hub wall clock ms of that status.
    pub(crate) status_at: Option<u64>,
}

/// A topic with at least one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicRow {
    pub(crate) topic: String,
    pub(crate) subscribers: usize,
    /// `topic.message`s routed to it since it got its first subscriber.
    pub(crate) published: u64,
    /// Deliveries of those messages queued for its subscribers.
    pub(crate) delivered: u64,
}

impl Routing {
    /// Bumped on every membership, status and subscription change.
    pub(crate) fn revision(&self) -> u64 {
        self.revision
    }

    /// A copy of what the dashboard shows, with the gauges read now.
    pub(crate) fn dashboard(&self) -> DashboardView {
        let peers = self
            .order
            .iter()
            .filter_map(|k| self.peers.get(k))
            .take(MAX_ROWS)
            .map(|p| {
                let status = self.statuses.get(&p.kind);
                PeerRow {
                    kind: p.kind.clone(),
                    remote: self.conns.get(&p.conn).and_then(|c| c.remote),
                    connected_at: p.connected_at,
                    status: status.map(|s| status_text(s.status.as_ref())),
                    status_at: status.map(|s| s.at as u64),
                }
            })
            .collect();
        let topics = self
            .topics
            .iter()
            .take(MAX_ROWS)
            .map(|(topic, s)| TopicRow {
                topic: topic.clone(),
                subscribers: s.order.len(),
                published: s.published,
                delivered: s.delivered,
            })
            .collect();
        DashboardView {
            peers,
            peer_count: self.peers.len(),
            topics,
            topic_count: self.topics.len(),
            stats: self.stats(),
        }
    }
}

/// Compact JSON of a status, cut to [`MAX_STATUS_BYTES`] without writing
/// more than that (a large status costs no more than a small one).
fn status_text(status: Option<&serde_json::Value>) -> String {
    let Some(status) = status else {
        return "null".to_owned();
    };
    let mut out = Capped(Vec::with_capacity(MAX_STATUS_BYTES));
    let cut = serde_json::to_writer(&mut out, status).is_err();
    let mut text = String::from_utf8_lossy(&out.0).into_owned();
    if cut {
        // The cut may split a character: drop the replacement it became.
        while text.ends_with('\u{FFFD}') {
            text.pop();
        }
        text.push('…');
    }
    text
}

/// A writer that refuses what does not fit in [`MAX_STATUS_BYTES`].
struct Capped(Vec<u8>);

impl io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = MAX_STATUS_BYTES - self.0.len();
        if room == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let n = buf.len().min(room);
        self.0.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn statuses_are_compact_json_cut_at_the_cap() {
        assert_eq!(status_text(None), "null");
        assert_eq!(
            status_text(Some(&json!({"phase": "ready", "n": 2}))),
            r#"{"n":2,"phase":"ready"}"#
        );
        let long = status_text(Some(&json!({ "text": "x".repeat(1000) })));
        assert!(long.ends_with('…'), "{long}");
        assert_eq!(long.len(), MAX_STATUS_BYTES + '…'.len_utf8());
        // A cut inside a multi-byte character leaves no broken character.
        let wide = status_text(Some(&json!("é".repeat(200))));
        assert!(wide.ends_with('…') && !wide.contains('\u{FFFD}'), "{wide}");
        assert!(wide.len() <= MAX_STATUS_BYTES + '…'.len_utf8());
    }
}

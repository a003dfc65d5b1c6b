//! What the online subcommands print: JSON lines for scripts, or a human
//! rendering on a terminal.
//!
//! ```text
//!   Value / TopicMessage / DirectMessage / peers / statuses
//!        └──► render_* (Format) ──► String ──► Out::line ──► stdout
//! ```
//!
//! [`Format::Json`] writes exactly one compact JSON value per line, whose
//! shape is the same on every run: an RPC result as is, a topic message
//! `{"topic","from","payload"}`, a direct message `{"from","type","data"}`,
//! the peers array of `peers.update`, the statuses object of
//! `status.snapshot`. [`Format::Pretty`] is for people and may change.
//!
//! The renderers are pure functions of their input (and, for ages, of the
//! `now_ms` passed in), so they are tested without a terminal.

use std::io::{self, Write};

use link_client::{DirectMessage, TopicMessage};
use link_protocol::messages::{self, PeerInfo, StatusEntry};
use serde_json::{Value, json};

use crate::exit::{Failure, Status};

/// How values are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// One compact JSON value per line.
    Json,
    /// Indented JSON and aligned columns.
    Pretty,
}

/// An RPC result or any other JSON answer.
pub(crate) fn render_value(format: Format, value: &Value) -> String {
    match format {
        Format::Json => value.to_string(),
        Format::Pretty => serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()),
    }
}

/// One message of a subscription.
pub(crate) fn render_topic(format: Format, msg: &TopicMessage) -> String {
    let payload = msg.payload().unwrap_or(&Value::Null);
    match format {
        Format::Json => {
            json!({"topic": msg.topic, "from": msg.from, "payload": payload}).to_string()
        }
        Format::Pretty => format!("[{}] {}: {payload}", msg.topic, msg.from),
    }
}

/// One direct message.
pub(crate) fn render_direct(format: Format, msg: &DirectMessage) -> String {
    let data = msg.data().unwrap_or(&Value::Null);
    match format {
        Format::Json => json!({"from": msg.from, "type": msg.msg_type, "data": data}).to_string(),
        Format::Pretty => format!("[{}] {}: {data}", msg.msg_type, msg.from),
    }
}

/// The peer list; `own` (this CLI) is marked in the pretty form.
pub(crate) fn render_peers(format: Format, peers: &[PeerInfo], own: &str, now_ms: u64) -> String {
    if format == Format::Json {
        return Value::Array(peers.iter().map(PeerInfo::to_value).collect()).to_string();
    }
    let rows: Vec<[String; 4]> = peers
        .iter()
        .map(|p| {
            let hello = p.hello.as_ref();
            let name = hello.map(|h| h.name.clone()).unwrap_or_default();
            let pid = hello
                .and_then(|h| h.pid)
                .map(|pid| pid.to_string())
                .unwrap_or_default();
            let mut up = p
                .connected_at
                .map(|at| format!("up {}", age(now_ms, at)))
                .unwrap_or_default();
            if p.kind == own {
                up.push_str("  (this CLI)");
            }
            [p.kind.clone(), name, pid, up]
        })
        .collect();
    table(["KIND", "NAME", "PID", "CONNECTED"], &rows)
}

/// The last status of each peer, by kind.
pub(crate) fn render_statuses(
    format: Format,
    statuses: &[(String, StatusEntry)],
    now_ms: u64,
) -> String {
    if format == Format::Json {
        return messages::status_snapshot_value(statuses.iter().map(|(k, e)| (k.as_str(), e)))
            .to_string();
    }
    if statuses.is_empty() {
        return "no peer has sent a status".to_owned();
    }
    let rows: Vec<[String; 3]> = statuses
        .iter()
        .map(|(kind, e)| {
            let status = e
                .status
                .as_ref()
                .map_or_else(|| "-".to_owned(), Value::to_string);
            [kind.clone(), format!("{} ago", age(now_ms, e.at)), status]
        })
        .collect();
    table(["KIND", "UPDATED", "STATUS"], &rows)
}

/// Left-aligned columns under a header, two spaces apart, no trailing
/// blanks.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; N]| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count() + 2;
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        s.trim_end().to_owned()
    };
    let mut lines = vec![line(header)];
    lines.extend(rows.iter().map(|r| line(r.each_ref().map(String::as_str))));
    lines.join("\n")
}

/// `now - at` in a short human form (`42s`, `3m05s`, `2h07m`).
fn age(now_ms: u64, at_ms: f64) -> String {
    let secs = if at_ms.is_finite() && at_ms >= 0.0 {
        now_ms.saturating_sub(at_ms as u64) / 1000
    } else {
        0
    };
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Wall clock in milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Line-at-a-time stdout. A reader that went away (`| head -1`) ends the
/// command quietly with exit 0: see [`Out::closed`].
pub(crate) struct Out {
    stdout: io::Stdout,
}

impl Out {
    pub(crate) fn new() -> Self {
        Self {
            stdout: io::stdout(),
        }
    }

    /// Writes `text` and a newline, and flushes, so each message is seen
    /// as soon as it arrives.
    pub(crate) fn line(&mut self, text: &str) -> io::Result<()> {
        let mut out = self.stdout.lock();
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// How a write error ends the command: a closed pipe is a normal end.
    pub(crate) fn closed(err: &io::Error) -> Result<Status, Failure> {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Ok(Status::Ok)
        } else {
            Err(Failure::write(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use link_protocol::Hello;

    use super::*;

    fn topic_message(payload: Option<Value>) -> TopicMessage {
        let mut data = json!({"topic": "news"});
        if let Some(p) = payload {
            data["payload"] = p;
        }
        let env = link_protocol::envelope::Envelope::from_object(
            json!({"v": 1, "id": "i", "ts": 1, "type": "topic.message", "data": data})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap();
        TopicMessage {
            topic: "news".into(),
            from: "alpha".into(),
            envelope: env,
        }
    }

    #[test]
    fn topic_messages() {
        let m = topic_message(Some(json!({"n": 1})));
        let line: Value = serde_json::from_str(&render_topic(Format::Json, &m)).unwrap();
        assert_eq!(
            line,
            json!({"topic": "news", "from": "alpha", "payload": {"n": 1}})
        );
        assert_eq!(render_topic(Format::Pretty, &m), r#"[news] alpha: {"n":1}"#);
        let empty = topic_message(None);
        assert!(render_topic(Format::Json, &empty).contains(r#""payload":null"#));
    }

    #[test]
    fn values() {
        let v = json!({"a": [1, 2]});
        assert_eq!(render_value(Format::Json, &v), r#"{"a":[1,2]}"#);
        assert!(render_value(Format::Pretty, &v).contains("\n  \"a\": ["));
    }

    #[test]
    fn peers_table_and_json() {
        let peers = vec![
            PeerInfo {
                kind: "worker".into(),
                hello: Some(Hello {
                    kind: "worker".into(),
                    name: "w1".into(),
                    pid: Some(42.0),
                    started_at: None,
                }),
                connected_at: Some(1_000.0),
                connected: true,
            },
            PeerInfo {
                kind: "link-cli-7".into(),
                hello: None,
                connected_at: Some(61_000.0),
                connected: true,
            },
        ];
        let json: Value =
            serde_json::from_str(&render_peers(Format::Json, &peers, "link-cli-7", 0)).unwrap();
        assert_eq!(json[0]["kind"], "worker");
        assert_eq!(json[0]["connected"], true);
        assert_eq!(json[1]["connectedAt"], 61_000.0);
        let pretty = render_peers(Format::Pretty, &peers, "link-cli-7", 126_000);
        assert_eq!(
            pretty,
            "KIND        NAME  PID  CONNECTED\n\
             worker      w1    42   up 2m05s\n\
             link-cli-7             up 1m05s  (this CLI)"
        );
    }

    #[test]
    fn statuses_table_and_json() {
        let statuses = vec![
            (
                "a".to_owned(),
                StatusEntry {
                    status: Some(json!({"load": 1})),
                    at: 0.0,
                },
            ),
            (
                "b".to_owned(),
                StatusEntry {
                    status: None,
                    at: 9_000_000.0,
                },
            ),
        ];
        let json: Value =
            serde_json::from_str(&render_statuses(Format::Json, &statuses, 0)).unwrap();
        assert_eq!(
            json,
            json!({"a": {"status": {"load": 1}, "at": 0}, "b": {"at": 9_000_000}})
        );
        let pretty = render_statuses(Format::Pretty, &statuses, 9_000_000);
        assert_eq!(
            pretty,
            "KIND  UPDATED    STATUS\n\
             a     2h30m ago  {\"load\":1}\n\
             b     0s ago     -"
        );
    }
}

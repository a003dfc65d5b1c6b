//! The `peers.delta` extension (docs/protocol.md §5.2.2): versioned peer
//! snapshots and deltas for clients that ask for them, instead of a full
//! `peers.update` on every membership change.
//!
//! ```text
//!  client hello  data.features: ["peers.delta"]
//!  hub hello.ack data.features: [..., "peers.delta"]        (only if asked)
//!  hub ──► peers.snapshot {version, part, parts, peers:[entry…]}   once per connection (in parts)
//!  hub ──► peers.delta    {base, version, joined, left, changed}    paced, coalesced
//!  client ──► peers.resync {}                                      after a gap
//! ```
//!
//! Entries are compact arrays, `[kind, name|null, pid|null, startedAt|null,
//! connectedAt|null]` (`name` is `null` when it equals the kind), about a
//! third of a `peers.update` entry: every client holding the complete list
//! costs N entries per client whatever is sent, so the entry size is the
//! floor's constant.
//!
//! This module owns the wire shapes (builders for the hub, parsers for the
//! client) and [`PeerSync`], the client's sans-I/O tracker that turns what
//! arrives into complete lists, deltas to apply, or a resync to ask for.

use serde_json::Value;

use crate::canonical;
use crate::envelope::CanonicalData;
use crate::messages::{Hello, PeerInfo};

/// The largest `parts` a snapshot may announce (a bound for the client's
/// buffer; 65 536 parts of 256 KiB is far past any list).
pub const MAX_SNAPSHOT_PARTS: u32 = 65_536;

/// After a gap the client asks once, then again after this many more
/// deltas it could not apply (a resync answer lost to an outbox overflow
/// is retried, not waited for forever).
pub const RESYNC_EVERY: u32 = 16;

/// One peer's compact entry (see the module docs), canonical.
pub fn compact_entry(info: &PeerInfo) -> CanonicalData {
    let num = |f: Option<f64>| match f {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
        Some(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        None => Value::Null,
    };
    let hello = info.hello.as_ref();
    let name = hello
        .map(|h| h.name.as_str())
        .filter(|n| *n != info.kind)
        .map_or(Value::Null, Value::from);
    CanonicalData::new(&Value::Array(vec![
        Value::from(info.kind.as_str()),
        name,
        num(hello.and_then(|h| h.pid)),
        num(hello.and_then(|h| h.started_at)),
        num(info.connected_at),
    ]))
}

/// Reads a compact entry back into the `peers.update` shape (`None` when it
/// is not one).
pub fn parse_compact_entry(v: &Value) -> Option<PeerInfo> {
    let items = v.as_array()?;
    let kind = items.first()?.as_str()?.to_owned();
    let finite = |i: usize| {
        items
            .get(i)
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite())
    };
    let name = match items.get(1) {
        Some(Value::String(s)) => s.clone(),
        _ => kind.clone(),
    };
    Some(PeerInfo {
        hello: Some(Hello {
            kind: kind.clone(),
            name,
            pid: finite(2),
            started_at: finite(3),
        }),
        kind,
        connected_at: finite(4),
        connected: true,
    })
}

/// `peers.snapshot` data, `{"part":p,"parts":n,"peers":[…],"version":v}`,
/// built by concatenating entries already canonical.
pub fn snapshot_data<'a>(
    version: u64,
    part: u32,
    parts: u32,
    entries: impl IntoIterator<Item = &'a CanonicalData>,
) -> CanonicalData {
    let mut text = format!("{{\"part\":{part},\"parts\":{parts},\"peers\":[");
    push_all(&mut text, entries);
    text.push_str(&format!("],\"version\":{version}}}"));
    CanonicalData::assume_canonical(text)
}

/// `peers.delta` data,
/// `{"base":b,"changed":[…],"joined":[…],"left":[kind…],"version":v}`.
pub fn delta_data<'a, 'k>(
    base: u64,
    version: u64,
    changed: impl IntoIterator<Item = &'a CanonicalData>,
    joined: impl IntoIterator<Item = &'a CanonicalData>,
    left: impl IntoIterator<Item = &'k str>,
) -> CanonicalData {
    let mut text = format!("{{\"base\":{base},\"changed\":[");
    push_all(&mut text, changed);
    text.push_str("],\"joined\":[");
    push_all(&mut text, joined);
    text.push_str("],\"left\":[");
    for (i, kind) in left.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        canonical::write_str(kind, &mut text);
    }
    text.push_str(&format!("],\"version\":{version}}}"));
    CanonicalData::assume_canonical(text)
}

fn push_all<'a>(text: &mut String, entries: impl IntoIterator<Item = &'a CanonicalData>) {
    for (i, e) in entries.into_iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(e.as_str());
    }
}

/// A `peers.snapshot` part.
#[derive(Clone, Debug, PartialEq)]
pub struct PeersSnapshot {
    /// The membership version the whole snapshot describes.
    pub version: u64,
    /// This part's index (0-based).
    pub part: u32,
    /// How many parts the snapshot has.
    pub parts: u32,
    /// This part's peers, in registration order.
    pub peers: Vec<PeerInfo>,
}

/// A `peers.delta`.
#[derive(Clone, Debug, PartialEq)]
pub struct PeersDelta {
    /// The version it applies to.
    pub base: u64,
    /// The version it leads to.
    pub version: u64,
    /// Peers that joined, in registration order (appended to the list).
    pub joined: Vec<PeerInfo>,
    /// Kinds that left.
    pub left: Vec<String>,
    /// Peers re-registered by a new socket (they keep their place).
    pub changed: Vec<PeerInfo>,
}

fn u64_of(data: &Value, key: &str) -> Option<u64> {
    data.get(key)?.as_u64()
}

fn entries(data: &Value, key: &str) -> Option<Vec<PeerInfo>> {
    data.get(key)?
        .as_array()?
        .iter()
        .map(parse_compact_entry)
        .collect()
}

impl PeersSnapshot {
    /// Reads `peers.snapshot` data (`None`: malformed).
    pub fn parse(data: Option<&Value>) -> Option<Self> {
        let data = data?;
        let parts = u32::try_from(u64_of(data, "parts")?).ok()?;
        let part = u32::try_from(u64_of(data, "part")?).ok()?;
        if parts == 0 || parts > MAX_SNAPSHOT_PARTS || part >= parts {
            return None;
        }
        Some(Self {
            version: u64_of(data, "version")?,
            part,
            parts,
            peers: entries(data, "peers")?,
        })
    }
}

impl PeersDelta {
    /// Reads `peers.delta` data (`None`: malformed).
    pub fn parse(data: Option<&Value>) -> Option<Self> {
        let data = data?;
        let left = data
            .get("left")?
            .as_array()?
            .iter()
            .map(|k| k.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            base: u64_of(data, "base")?,
            version: u64_of(data, "version")?,
            joined: entries(data, "joined")?,
            left,
            changed: entries(data, "changed")?,
        })
    }
}

/// What [`PeerSync`] makes of a snapshot part or a delta.
#[derive(Clone, Debug, PartialEq)]
pub enum PeerStep {
    /// Nothing to do yet (a snapshot part kept, or a delta ignored while
    /// a resync is under way).
    Wait,
    /// A complete list: replace the peer list with it (as a v1 client
    /// does with `peers.update`).
    List(Vec<PeerInfo>),
    /// Apply this delta to the list held.
    Apply(PeersDelta),
    /// A gap: send `peers.resync` (nothing to apply until a snapshot).
    Resync,
}

/// The client's side of the extension, per connection: which version its
/// list is at, the snapshot parts gathered so far, and whether a resync is
/// under way. Sans-I/O: the driver feeds it messages and acts on the steps.
#[derive(Clone, Debug, Default)]
pub struct PeerSync {
    /// The version of the list held (`None`: no snapshot yet, or a gap).
    version: Option<u64>,
    /// A snapshot being gathered: its version, the next part wanted, the
    /// parts in all, the peers so far.
    building: Option<(u64, u32, u32, Vec<PeerInfo>)>,
    /// Deltas ignored since the last resync request (`None`: none asked).
    ignored: Option<u32>,
}

impl PeerSync {
    /// A tracker with no list.
    pub fn new() -> Self {
        Self::default()
    }

    /// The version of the list held.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// A new connection: the hub sends a fresh snapshot unasked.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// A `peers.snapshot` part arrived.
    pub fn on_snapshot(&mut self, s: PeersSnapshot) -> PeerStep {
        if s.part == 0 {
            self.building = Some((s.version, 0, s.parts, Vec::new()));
        }
        match self.building.as_mut() {
            Some((v, next, parts, peers))
                if *v == s.version && *next == s.part && *parts == s.parts =>
            {
                peers.extend(s.peers);
                *next += 1;
                if *next < *parts {
                    return PeerStep::Wait;
                }
                let peers = std::mem::take(peers);
                self.building = None;
                self.version = Some(s.version);
                self.ignored = None;
                PeerStep::List(peers)
            }
            _ => {
                // A part out of order (one was lost): start again.
                self.building = None;
                self.gap()
            }
        }
    }

    /// A `peers.delta` arrived.
    pub fn on_delta(&mut self, d: PeersDelta) -> PeerStep {
        match self.version {
            Some(v) if d.base == v && d.version > d.base => {
                self.version = Some(d.version);
                PeerStep::Apply(d)
            }
            // Already covered (a delta older than the snapshot held).
            Some(v) if d.version <= v => PeerStep::Wait,
            // A snapshot's parts come one after another: a delta in
            // between means one was lost and the rest will not come.
            _ => {
                self.building = None;
                self.gap()
            }
        }
    }

    /// The list cannot follow: ask once, then again every
    /// [`RESYNC_EVERY`] deltas that cannot be applied.
    fn gap(&mut self) -> PeerStep {
        self.version = None;
        match self.ignored.as_mut() {
            Some(n) if *n + 1 < RESYNC_EVERY => {
                *n += 1;
                PeerStep::Wait
            }
            _ => {
                self.ignored = Some(0);
                PeerStep::Resync
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info(kind: &str, name: &str, at: f64) -> PeerInfo {
        PeerInfo {
            kind: kind.into(),
            hello: Some(Hello {
                kind: kind.into(),
                name: name.into(),
                pid: Some(7.0),
                started_at: Some(1000.0),
            }),
            connected_at: Some(at),
            connected: true,
        }
    }

    fn value(c: &CanonicalData) -> Value {
        serde_json::from_str(c.as_str()).unwrap()
    }

    #[test]
    fn compact_entries_round_trip_and_omit_a_name_equal_to_the_kind() {
        let a = info("alpha", "alpha", 1001.0);
        let b = info("beta", "beta-1", 1002.0);
        assert_eq!(compact_entry(&a).as_str(), r#"["alpha",null,7,1000,1001]"#);
        assert_eq!(
            compact_entry(&b).as_str(),
            r#"["beta","beta-1",7,1000,1002]"#
        );
        assert_eq!(parse_compact_entry(&value(&compact_entry(&a))), Some(a));
        assert_eq!(parse_compact_entry(&value(&compact_entry(&b))), Some(b));
        assert_eq!(parse_compact_entry(&json!({"kind": "a"})), None);
    }

    #[test]
    fn built_data_is_canonical() {
        let (a, b) = (
            compact_entry(&info("a", "a", 1.0)),
            compact_entry(&info("b", "b", 2.0)),
        );
        let s = snapshot_data(9, 1, 2, [&a, &b]);
        assert_eq!(s.as_str(), CanonicalData::new(&value(&s)).as_str());
        assert_eq!(
            s.as_str(),
            r#"{"part":1,"parts":2,"peers":[["a",null,7,1000,1],["b",null,7,1000,2]],"version":9}"#
        );
        let d = delta_data(3, 5, [&a], [&b], ["c\"x", "d"]);
        assert_eq!(d.as_str(), CanonicalData::new(&value(&d)).as_str());
        let parsed = PeersDelta::parse(Some(&value(&d))).unwrap();
        assert_eq!((parsed.base, parsed.version), (3, 5));
        assert_eq!(parsed.left, ["c\"x", "d"]);
        assert_eq!(parsed.changed[0].kind, "a");
        assert_eq!(parsed.joined[0].kind, "b");
    }

    #[test]
    fn malformed_parts_are_refused() {
        let bad = [
            json!({"part": 0, "parts": 0, "peers": [], "version": 1}),
            json!({"part": 2, "parts": 2, "peers": [], "version": 1}),
            json!({"part": 0, "parts": 1, "peers": [{"kind": "a"}], "version": 1}),
            json!({"part": 0, "parts": 1, "peers": [], "version": -1}),
        ];
        for b in bad {
            assert_eq!(PeersSnapshot::parse(Some(&b)), None, "{b}");
        }
        assert_eq!(
            PeersDelta::parse(Some(&json!({"base": 1, "version": 2}))),
            None
        );
    }

    fn snap(version: u64, part: u32, parts: u32, kinds: &[&str]) -> PeersSnapshot {
        PeersSnapshot {
            version,
            part,
            parts,
            peers: kinds.iter().map(|k| info(k, k, 1.0)).collect(),
        }
    }

    fn delta(base: u64, version: u64, joined: &[&str]) -> PeersDelta {
        PeersDelta {
            base,
            version,
            joined: joined.iter().map(|k| info(k, k, 1.0)).collect(),
            left: Vec::new(),
            changed: Vec::new(),
        }
    }

    #[test]
    fn parts_gather_into_one_list_then_deltas_apply_in_order() {
        let mut s = PeerSync::new();
        assert_eq!(s.on_snapshot(snap(4, 0, 2, &["a", "b"])), PeerStep::Wait);
        let PeerStep::List(list) = s.on_snapshot(snap(4, 1, 2, &["c"])) else {
            panic!("no list");
        };
        assert_eq!(
            list.iter().map(|p| p.kind.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(s.version(), Some(4));
        assert!(matches!(
            s.on_delta(delta(4, 6, &["d"])),
            PeerStep::Apply(_)
        ));
        assert_eq!(s.version(), Some(6));
        // Older than what is held: nothing to do, no resync.
        assert_eq!(s.on_delta(delta(3, 5, &["x"])), PeerStep::Wait);
    }

    #[test]
    fn a_gap_asks_once_then_again_every_resync_every_deltas_until_a_snapshot() {
        let mut s = PeerSync::new();
        assert!(matches!(
            s.on_snapshot(snap(1, 0, 1, &["a"])),
            PeerStep::List(_)
        ));
        assert_eq!(s.on_delta(delta(2, 3, &["b"])), PeerStep::Resync);
        assert_eq!(s.version(), None);
        for _ in 1..RESYNC_EVERY {
            assert_eq!(s.on_delta(delta(3, 4, &["c"])), PeerStep::Wait);
        }
        assert_eq!(s.on_delta(delta(4, 5, &["c"])), PeerStep::Resync);
        assert!(matches!(
            s.on_snapshot(snap(9, 0, 1, &["a", "c"])),
            PeerStep::List(_)
        ));
        assert!(matches!(
            s.on_delta(delta(9, 10, &["d"])),
            PeerStep::Apply(_)
        ));
    }

    /// Fuzz finding (`fuzz/regressions/presence/delta-after-a-lost-last-part`):
    /// a snapshot whose last part was lost, followed by deltas only, left
    /// the tracker waiting for that part for ever, never asking again.
    #[test]
    fn a_delta_while_a_snapshot_is_part_way_is_a_gap() {
        let mut s = PeerSync::new();
        assert!(matches!(
            s.on_snapshot(snap(1, 0, 1, &["a"])),
            PeerStep::List(_)
        ));
        assert_eq!(s.on_snapshot(snap(4, 0, 2, &["a", "b"])), PeerStep::Wait);
        // Part 1 is lost; the deltas from version 4 follow.
        assert_eq!(s.on_delta(delta(4, 5, &["c"])), PeerStep::Resync);
        assert_eq!(s.version(), None);
        for _ in 1..RESYNC_EVERY {
            assert_eq!(s.on_delta(delta(5, 6, &["d"])), PeerStep::Wait);
        }
        assert_eq!(s.on_delta(delta(6, 7, &["e"])), PeerStep::Resync);
        // A late part of the lost snapshot starts nothing.
        assert_eq!(s.on_snapshot(snap(4, 1, 2, &["c"])), PeerStep::Wait);
        assert!(matches!(
            s.on_snapshot(snap(7, 0, 1, &["a", "c"])),
            PeerStep::List(_)
        ));
    }

    #[test]
    fn a_lost_part_asks_for_a_resync() {
        let mut s = PeerSync::new();
        assert_eq!(s.on_snapshot(snap(4, 0, 3, &["a"])), PeerStep::Wait);
        assert_eq!(s.on_snapshot(snap(4, 2, 3, &["c"])), PeerStep::Resync);
        // Deltas while nothing is held wait for the snapshot.
        assert_eq!(s.on_delta(delta(4, 5, &["d"])), PeerStep::Wait);
        assert_eq!(
            s.on_snapshot(snap(5, 0, 1, &["a"])),
            PeerStep::List(vec![info("a", "a", 1.0)])
        );
    }
}

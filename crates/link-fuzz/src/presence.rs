//! Target `presence`: the client's side of the `peers.delta` extension
//! (`link_protocol::presence`, docs/protocol.md §5.2.2) alone: the
//! parsers, the compact entries and the [`PeerSync`] tracker, fed
//!
//! - fuzz-chosen JSON (text, or values built from structural choices that
//!   get past the parsers often: objects with the snapshot's and delta's
//!   keys, entry-like arrays, odd numbers and strings), read by
//!   [`PeersSnapshot::parse`] and [`PeersDelta::parse`] and fed to a
//!   tracker; and
//! - well-formed messages built with the hub's own builders
//!   ([`snapshot_data`], [`delta_data`], [`compact_entry`]) from a
//!   fuzz-chosen membership history (joins, re-registrations in place,
//!   departures): a snapshot in parts, then deltas over fuzz-chosen version
//!   steps, with fresh snapshots in between, delivered in order or with
//!   messages dropped, duplicated or swapped.
//!
//! The client list is applied as link-client applies the tracker's steps
//! (`List` replaces, `Apply` removes `left`, replaces `changed` in place,
//! appends `joined`). Checks:
//! - nothing panics; whatever a parser accepts is in range (`part <
//!   parts <= MAX_SNAPSHOT_PARTS`) and its entries round-trip through
//!   [`compact_entry`] / [`parse_compact_entry`], and a compact entry is
//!   canonical JSON;
//! - the tracker applies a delta only to the version the client holds, and
//!   its version is then the delta's; a list it hands over is a snapshot's
//!   version;
//! - history: every message built parses back to what was built; every
//!   list the client holds is the membership at the tracker's version; a
//!   history delivered in order yields exactly the final membership
//!   without a resync; after a loss the tracker asks for a resync before
//!   [`RESYNC_EVERY`] deltas it cannot apply have gone by.

use link_protocol::presence::{
    MAX_SNAPSHOT_PARTS, PeerStep, PeerSync, PeersDelta, PeersSnapshot, RESYNC_EVERY, compact_entry,
    delta_data, parse_compact_entry, snapshot_data,
};
use link_protocol::{CanonicalData, Hello, PeerInfo, Value};
use serde_json::json;

use crate::input::Input;

const MAX_OPS: usize = 64;
/// Kinds a history draws from (escapes and non-ASCII included).
const KINDS: &[&str] = &["a", "b", "c", "d", "q\"x\\", "é-ü"];

/// Runs one input (see the module docs); panics when a check fails.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    match input.byte() % 4 {
        0 => {
            let text = input.bytes(4096);
            if let Ok(v) = serde_json::from_slice::<Value>(text) {
                arbitrary(&[v]);
            }
        }
        1 => {
            let mut values = Vec::new();
            while !input.is_empty() && values.len() < 32 {
                values.push(message_like(&mut input, 0));
            }
            arbitrary(&values);
        }
        _ => history(&mut input),
    }
}

// ----- arbitrary data ------------------------------------------------------

/// Fuzz-chosen values read as both messages; the accepted ones go through
/// one tracker in turn.
fn arbitrary(values: &[Value]) {
    let mut client = Client::default();
    for v in values {
        if let Some(s) = PeersSnapshot::parse(Some(v)) {
            assert!(s.parts > 0 && s.parts <= MAX_SNAPSHOT_PARTS && s.part < s.parts);
            s.peers.iter().for_each(round_trip);
            client.snapshot(s, None);
        }
        if let Some(d) = PeersDelta::parse(Some(v)) {
            d.joined.iter().chain(&d.changed).for_each(round_trip);
            client.delta(d, None);
        }
    }
}

/// A value built from choices: mostly objects with the messages' keys.
fn message_like(input: &mut Input<'_>, depth: u8) -> Value {
    const KEYS: &[&str] = &[
        "part", "parts", "peers", "version", "base", "joined", "left", "changed", "x",
    ];
    if depth > 3 {
        return scalar(input);
    }
    match input.byte() % 8 {
        0..=3 => {
            let mut m = serde_json::Map::new();
            for _ in 0..input.byte() % 9 {
                let key = *input.choose(KEYS);
                let value = match input.byte() % 4 {
                    0 => number(input),
                    1 => Value::Array(
                        (0..input.byte() % 4)
                            .map(|_| entry_like(input, depth + 1))
                            .collect(),
                    ),
                    _ => message_like(input, depth + 1),
                };
                m.insert(key.to_owned(), value);
            }
            Value::Object(m)
        }
        4 | 5 => entry_like(input, depth + 1),
        6 => Value::Array(
            (0..input.byte() % 4)
                .map(|_| message_like(input, depth + 1))
                .collect(),
        ),
        _ => scalar(input),
    }
}

/// Mostly `[kind, name, pid, startedAt, connectedAt]`-shaped arrays.
fn entry_like(input: &mut Input<'_>, depth: u8) -> Value {
    if input.byte().is_multiple_of(4) {
        return message_like(input, depth + 1);
    }
    let len = input.byte() % 7;
    Value::Array((0..len).map(|_| scalar(input)).collect())
}

fn scalar(input: &mut Input<'_>) -> Value {
    match input.byte() % 5 {
        0 => Value::Null,
        1 => Value::Bool(input.bool()),
        2 | 3 => number(input),
        _ => Value::from(
            input
                .choose(&["a", "", "é", "q\"x\\", "peers", "1"])
                .to_owned(),
        ),
    }
}

fn number(input: &mut Input<'_>) -> Value {
    match input.byte() % 8 {
        0 => json!(input.byte() % 4),
        1 => json!(input.u16()),
        2 => json!(u64::MAX),
        3 => json!(-1),
        4 => json!(1.5),
        5 => json!(1e300),
        6 => json!(u64::from(MAX_SNAPSHOT_PARTS) + u64::from(input.byte() % 3) - 1),
        _ => json!(u64::from(u32::MAX) + 1),
    }
}

/// A parsed entry survives the compact form, which is canonical.
fn round_trip(p: &PeerInfo) {
    let compact = compact_entry(p);
    let v: Value = serde_json::from_str(compact.as_str()).unwrap_or_else(|e| {
        panic!("compact entry {} is not JSON: {e}", compact.as_str());
    });
    assert_eq!(
        CanonicalData::new(&v).as_str(),
        compact.as_str(),
        "compact entry not canonical"
    );
    assert_eq!(
        parse_compact_entry(&v).as_ref(),
        Some(p),
        "{}",
        compact.as_str()
    );
}

// ----- the client ----------------------------------------------------------

/// A client: its tracker, the list it holds and that list's version (as
/// the harness counts it), and how many deltas it could not apply since
/// it last asked for a resync or got a list.
#[derive(Default)]
struct Client {
    sync: PeerSync,
    list: Option<Vec<PeerInfo>>,
    held: Option<u64>,
    unapplied: u32,
    resyncs: usize,
}

impl Client {
    /// A snapshot part; `model` is the membership of its version, when
    /// known.
    fn snapshot(&mut self, s: PeersSnapshot, model: Option<&[PeerInfo]>) {
        let version = s.version;
        let step = self.sync.on_snapshot(s);
        if let PeerStep::List(peers) = &step {
            if let Some(model) = model {
                assert_eq!(peers.as_slice(), model, "snapshot {version}: another list");
            }
            assert_eq!(self.sync.version(), Some(version));
        }
        self.act(step);
    }

    /// A delta; `model` is the membership at its version, when known.
    fn delta(&mut self, d: PeersDelta, model: Option<&[PeerInfo]>) {
        let (base, version) = (d.base, d.version);
        // What the client could not apply: a delta past what it holds that
        // does not start there (or anything while it holds nothing).
        let unusable = match self.held {
            Some(h) => base != h && version > h,
            None => true,
        };
        let step = self.sync.on_delta(d);
        match &step {
            PeerStep::Apply(_) => {
                assert_eq!(
                    self.held,
                    Some(base),
                    "delta {base}..{version} applied to another version"
                );
                assert!(version > base);
                assert_eq!(self.sync.version(), Some(version));
            }
            PeerStep::Resync => {}
            _ if unusable => {
                self.unapplied += 1;
                assert!(
                    self.unapplied < RESYNC_EVERY,
                    "{RESYNC_EVERY} deltas could not be applied and no resync was asked"
                );
            }
            _ => {}
        }
        self.act(step);
        if let (Some(model), Some(list)) = (model, &self.list)
            && self.held == Some(version)
        {
            assert_eq!(list.as_slice(), model, "after delta {base}..{version}");
        }
    }

    /// As link-client acts on a step.
    fn act(&mut self, step: PeerStep) {
        match step {
            PeerStep::Wait => {}
            PeerStep::List(peers) => {
                self.list = Some(peers);
                self.held = self.sync.version();
                self.unapplied = 0;
            }
            PeerStep::Apply(d) => {
                let list = self.list.get_or_insert_with(Vec::new);
                list.retain(|p| !d.left.contains(&p.kind));
                for p in d.changed {
                    if let Some(slot) = list.iter_mut().find(|q| q.kind == p.kind) {
                        *slot = p;
                    }
                }
                list.extend(d.joined);
                self.held = Some(d.version);
            }
            PeerStep::Resync => {
                self.held = None;
                self.unapplied = 0;
                self.resyncs += 1;
            }
            // A step this harness does not know yet: nothing to apply.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

// ----- well-formed histories -----------------------------------------------

/// One membership change (the entries are in the lists).
#[derive(Clone, Copy)]
enum Change {
    Joined,
    Changed,
    Left,
}

/// What the hub sends.
#[derive(Clone)]
enum Msg {
    Part(PeersSnapshot),
    Delta(PeersDelta),
}

impl Msg {
    fn version(&self) -> u64 {
        match self {
            Self::Part(s) => s.version,
            Self::Delta(d) => d.version,
        }
    }
}

fn peer(input: &mut Input<'_>, kind: &str, version: u64) -> PeerInfo {
    let name = *input.choose(&[None, Some(""), Some("n-1"), Some("é\"")]);
    let odd = [
        None,
        Some(7.0),
        Some(1.5),
        Some(-0.0),
        Some(1e300),
        Some(-3e15),
    ];
    let pid = *input.choose(&odd);
    let started_at = *input.choose(&odd);
    PeerInfo {
        kind: kind.to_owned(),
        hello: Some(Hello {
            kind: kind.to_owned(),
            name: name.map_or_else(|| kind.to_owned(), str::to_owned),
            pid,
            started_at,
        }),
        connected_at: Some(1_795_424_111_000.0 + version as f64),
        connected: true,
    }
}

/// A history: `lists[v]` is the membership at version `v` (`lists[0]`
/// empty), `log[v - 1]` the change that made `v`.
fn build_history(input: &mut Input<'_>) -> (Vec<Vec<PeerInfo>>, Vec<(String, Change)>) {
    let mut lists: Vec<Vec<PeerInfo>> = vec![Vec::new()];
    let mut log = Vec::new();
    let ops = usize::from(input.byte()) % MAX_OPS + 1;
    for _ in 0..ops {
        let version = lists.len() as u64;
        let kind = *input.choose(KINDS);
        let mut list = lists[lists.len() - 1].clone();
        let pos = list.iter().position(|p| p.kind == kind);
        let change = match (pos, input.byte() % 3) {
            (None, _) => {
                list.push(peer(input, kind, version));
                Change::Joined
            }
            (Some(i), 0) => {
                list.remove(i);
                Change::Left
            }
            (Some(i), _) => {
                list[i] = peer(input, kind, version);
                Change::Changed
            }
        };
        log.push((kind.to_owned(), change));
        lists.push(list);
    }
    (lists, log)
}

/// The net change from `base` to `version`, as §5.2.2 defines it (a kind
/// that left and came back is in `left` and `joined`).
fn net_delta(
    lists: &[Vec<PeerInfo>],
    log: &[(String, Change)],
    base: u64,
    version: u64,
) -> PeersDelta {
    struct Net {
        in_base: bool,
        moved: bool,
    }
    let mut net: Vec<(&str, Net)> = Vec::new();
    for (kind, change) in &log[base as usize..version as usize] {
        let i = match net.iter().position(|(k, _)| k == kind) {
            Some(i) => i,
            None => {
                let in_base = !matches!(change, Change::Joined);
                net.push((
                    kind,
                    Net {
                        in_base,
                        moved: false,
                    },
                ));
                net.len() - 1
            }
        };
        if matches!(change, Change::Joined) && net[i].1.in_base {
            net[i].1.moved = true;
        }
    }
    let target = &lists[version as usize];
    let now = |kind: &str| target.iter().position(|p| p.kind == kind);
    let mut left = Vec::new();
    let mut changed: Vec<usize> = Vec::new();
    let mut joined: Vec<usize> = Vec::new();
    for (kind, n) in &net {
        match (now(kind), n.in_base, n.moved) {
            (None, true, _) => left.push((*kind).to_owned()),
            (None, false, _) => {}
            (Some(i), true, false) => changed.push(i),
            (Some(i), in_base, _) => {
                if in_base {
                    left.push((*kind).to_owned());
                }
                joined.push(i);
            }
        }
    }
    changed.sort_unstable();
    joined.sort_unstable();
    PeersDelta {
        base,
        version,
        joined: joined.into_iter().map(|i| target[i].clone()).collect(),
        left,
        changed: changed.into_iter().map(|i| target[i].clone()).collect(),
    }
}

/// The snapshot of `version` in `parts` parts (fewer when the list is
/// shorter), as a hub cuts it: consecutive runs in order.
fn snapshot(lists: &[Vec<PeerInfo>], version: u64, parts: usize) -> Vec<PeersSnapshot> {
    let list = &lists[version as usize];
    let parts = parts.clamp(1, list.len().max(1));
    let per = list.len().div_ceil(parts).max(1);
    let mut runs: Vec<&[PeerInfo]> = list.chunks(per).collect();
    if runs.is_empty() {
        runs.push(&[]);
    }
    let n = runs.len() as u32;
    runs.iter()
        .enumerate()
        .map(|(i, run)| PeersSnapshot {
            version,
            part: i as u32,
            parts: n,
            peers: run.to_vec(),
        })
        .collect()
}

/// The message on the wire, through the hub's builders and back through
/// the client's parser: it must read back as built.
fn wire(msg: &Msg) -> Msg {
    let data = match msg {
        Msg::Part(s) => {
            let entries: Vec<CanonicalData> = s.peers.iter().map(compact_entry).collect();
            snapshot_data(s.version, s.part, s.parts, &entries)
        }
        Msg::Delta(d) => {
            let changed: Vec<CanonicalData> = d.changed.iter().map(compact_entry).collect();
            let joined: Vec<CanonicalData> = d.joined.iter().map(compact_entry).collect();
            delta_data(
                d.base,
                d.version,
                &changed,
                &joined,
                d.left.iter().map(String::as_str),
            )
        }
    };
    let v: Value = serde_json::from_str(data.as_str())
        .unwrap_or_else(|e| panic!("built data is not JSON: {e}: {}", data.as_str()));
    assert_eq!(
        CanonicalData::new(&v).as_str(),
        data.as_str(),
        "built data is not canonical"
    );
    match msg {
        Msg::Part(s) => {
            let back = PeersSnapshot::parse(Some(&v));
            assert_eq!(back.as_ref(), Some(s), "{}", data.as_str());
            Msg::Part(s.clone())
        }
        Msg::Delta(d) => {
            let back = PeersDelta::parse(Some(&v));
            assert_eq!(back.as_ref(), Some(d), "{}", data.as_str());
            Msg::Delta(d.clone())
        }
    }
}

fn history(input: &mut Input<'_>) {
    let (lists, log) = build_history(input);
    let last = (lists.len() - 1) as u64;
    // Each version's snapshot is cut once (the hub builds it once).
    let cuts: Vec<usize> = (0..=last)
        .map(|_| usize::from(input.byte() % 4) + 1)
        .collect();
    // What the hub sends: a snapshot, then deltas over fuzz-chosen steps,
    // now and then a fresh snapshot (a resync's answer).
    let mut sent: Vec<Msg> = Vec::new();
    let mut at = u64::from(input.byte()) % (last + 1);
    sent.extend(
        snapshot(&lists, at, cuts[at as usize])
            .into_iter()
            .map(Msg::Part),
    );
    // (At most MAX_OPS deltas and five messages each: no cap needed.)
    while at < last {
        let to = (at + u64::from(input.byte() % 4) + 1).min(last);
        sent.push(Msg::Delta(net_delta(&lists, &log, at, to)));
        at = to;
        if input.byte().is_multiple_of(8) {
            sent.extend(
                snapshot(&lists, at, cuts[at as usize])
                    .into_iter()
                    .map(Msg::Part),
            );
        }
    }
    let sent: Vec<Msg> = sent.iter().map(wire).collect();
    // Delivered as sent, or with losses, duplicates and swaps.
    let perturb = input.bool();
    let mut delivered: Vec<Msg> = Vec::new();
    let mut i = 0;
    while i < sent.len() {
        match if perturb { input.byte() % 12 } else { 0 } {
            9 => {} // lost
            10 => {
                delivered.push(sent[i].clone());
                delivered.push(sent[i].clone());
            }
            11 if i + 1 < sent.len() => {
                delivered.push(sent[i + 1].clone());
                delivered.push(sent[i].clone());
                i += 1;
            }
            _ => delivered.push(sent[i].clone()),
        }
        i += 1;
    }
    let in_order =
        delivered.len() == sent.len() && delivered.iter().zip(&sent).all(|(a, b)| msg_eq(a, b));
    let mut client = Client::default();
    for msg in delivered {
        let model = lists[msg.version() as usize].as_slice();
        match msg {
            Msg::Part(s) => client.snapshot(s, Some(model)),
            Msg::Delta(d) => client.delta(d, Some(model)),
        }
        // Whatever the tracker says it holds, the list is that version's.
        if let (Some(v), Some(list)) = (client.sync.version(), &client.list) {
            assert_eq!(client.held, Some(v), "tracker and client disagree");
            assert_eq!(list.as_slice(), lists[v as usize].as_slice(), "list at {v}");
        }
    }
    if in_order {
        assert_eq!(client.resyncs, 0, "a resync in an in-order history");
        assert_eq!(client.sync.version(), Some(last));
        assert_eq!(
            client.list.as_deref(),
            Some(lists[last as usize].as_slice())
        );
    }
}

fn msg_eq(a: &Msg, b: &Msg) -> bool {
    match (a, b) {
        (Msg::Part(a), Msg::Part(b)) => a == b,
        (Msg::Delta(a), Msg::Delta(b)) => a == b,
        _ => false,
    }
}

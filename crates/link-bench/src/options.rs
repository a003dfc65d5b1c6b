//! What to run: [`Scenario`]s and the knobs shared by every scenario
//! ([`BenchOptions`]), with the defaults of issue 6.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use link_hub::PeerUpdates;

use crate::error::BenchError;

/// One benchmark scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// N sequential RPCs between two peers (echo handler).
    RpcSeq,
    /// N RPCs with C in flight.
    RpcConc,
    /// N directed messages a → b, timed until b counted them all.
    Send,
    /// N publishes to one subscriber, timed until delivered.
    Publish,
    /// One publisher, S subscribers (plus, with `--slow`, a variant with
    /// subscribers that stop reading).
    Fanout,
    /// K idle authenticated peers: hub memory per connection and hello rate.
    Connections,
    /// Publishers at full speed, without and then with one peer flooding
    /// at 10x its publish rate limit: the others' rate and the change (not
    /// in `all`: the hub must hold the flooder's limit).
    Flood,
    /// Hostile clients, one attack after another (slow upgrades, silent
    /// sockets, bad signatures, oversized and nested frames, 100 000
    /// subscriptions, 10 000 sockets without hello, half-open peers): the
    /// hub's peak RSS against a ceiling per attack, and good peers' RPC p99
    /// against a quiet run (not in `all`).
    Hostile,
}

impl Scenario {
    /// The scenarios `all` runs, in order (every one but `flood`).
    pub const ALL: [Self; 6] = [
        Self::RpcSeq,
        Self::RpcConc,
        Self::Send,
        Self::Publish,
        Self::Fanout,
        Self::Connections,
    ];

    /// Every scenario that has a name.
    pub const NAMED: [Self; 8] = [
        Self::RpcSeq,
        Self::RpcConc,
        Self::Send,
        Self::Publish,
        Self::Fanout,
        Self::Connections,
        Self::Flood,
        Self::Hostile,
    ];

    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RpcSeq => "rpc-seq",
            Self::RpcConc => "rpc-conc",
            Self::Send => "send",
            Self::Publish => "publish",
            Self::Fanout => "fanout",
            Self::Connections => "connections",
            Self::Flood => "flood",
            Self::Hostile => "hostile",
        }
    }

    /// N when `--count` is not given: a run of a few seconds on 2 cores.
    pub fn default_count(self) -> u64 {
        match self {
            Self::RpcSeq => 5_000,
            Self::RpcConc => 50_000,
            Self::Send | Self::Publish => 100_000,
            Self::Fanout => 1_000,
            Self::Connections => 10_000,
            Self::Flood => 50_000,
            // Good-peer RPCs of the quiet run.
            Self::Hostile => 2_000,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::NAMED
            .into_iter()
            .find(|sc| sc.as_str() == s)
            .ok_or_else(|| BenchError::InvalidOption {
                option: "scenario",
                reason: format!(
                    "unknown scenario {s:?} (expected one of rpc-seq, rpc-conc, send, publish, fanout, connections, flood, hostile, all)"
                ),
            })
    }
}

/// Parses a `--scenario` list: names separated by commas, `all` for every
/// scenario; duplicates are removed and the canonical order kept.
pub fn parse_scenarios(list: &[String]) -> Result<Vec<Scenario>, BenchError> {
    let mut out = Vec::new();
    for item in list.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if item.is_empty() {
            continue;
        }
        if item == "all" {
            out.extend(Scenario::ALL);
        } else {
            out.push(item.parse()?);
        }
    }
    if out.is_empty() {
        out.extend(Scenario::ALL);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Knobs shared by the scenarios. `Default` gives the defaults.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// N (messages or calls) for every scenario but `connections`; `None`
    /// uses [`Scenario::default_count`].
    pub count: Option<u64>,
    /// RPCs in flight for `rpc-conc` (default 64).
    pub concurrency: usize,
    /// Subscribers for `fanout` (default 100).
    pub subscribers: usize,
    /// Subscribers that stop reading in the `fanout` slow variant (default
    /// 0: no slow variant).
    pub slow: usize,
    /// Idle peers for `connections` (default 10 000).
    pub connections: usize,
    /// Hellos in flight while opening connections (default 64).
    pub hello_concurrency: usize,
    /// `connections`: v1 peers (full lists) or delta peers (default v1).
    pub clients: Clients,
    /// Messages a producer may have in flight (sent, not yet counted by
    /// every receiver) in `send`, `publish` and `fanout` (default 1000:
    /// below the 1024-message buffer of a `LinkClient` stream, which drops
    /// on overflow; 0: unlimited, and whatever overflows a buffer is lost).
    pub window: u64,
    /// Serialised size of the JSON payload in bytes (default 80).
    pub payload_bytes: usize,
    /// Runs of each scenario; reports give the median (default 1).
    pub runs: usize,
    /// A scenario that makes no progress for this long ends (default 10 s).
    pub idle_timeout: Duration,
    /// Longest time spent opening connections (default 120 s).
    pub max_connect_time: Duration,
    /// `connections`: when `settled KiB/conn` is read, after convergence
    /// (default 35 s: two of the hub's default keepalive rounds).
    pub settle: Duration,
    /// `peers.update` mode of a hub we start (embedded or child; a `--url`
    /// hub keeps its own). Default: broadcast, as the reference does.
    pub peer_updates: PeerUpdates,
    /// How link subscribers receive in `publish` and `fanout` (default:
    /// handlers).
    pub receiver: Receiver,
    /// Serve `wss://` from a hub we start (embedded or child), with a
    /// certificate for 127.0.0.1 made for the run (default: off).
    pub tls: bool,
    /// `flood`: the flooder's publish limit in messages per second (burst
    /// the same); it publishes at 10 times this (default 1000). A hub we
    /// start gets `--rate-limit bench-flooder:publish=N/s` when `flood`
    /// runs; a `--url` hub must hold that limit itself.
    pub flood_limit: u32,
    /// `flood`: publisher/subscriber pairs of normal load (default 2).
    pub flood_pairs: usize,
    /// `hostile`: the attacks to run, by name (empty: every one).
    pub attacks: Vec<String>,
    /// `hostile`: the nice value of the attackers' threads, 0 to 19
    /// (default 0: the same CPU priority as the hub and the good peers).
    /// On a box shared with the hub, 19 leaves the attackers only the CPU
    /// the hub and the good peers do not use, as attackers on machines of
    /// their own would: what the good peers feel is then the hub's share.
    pub attackers_nice: i32,
}

/// What the `connections` scenario's peers ask of the hub's presence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clients {
    /// Our client without the `peers.delta` feature: full `peers.update`
    /// lists, as Node peers are served.
    #[default]
    V1,
    /// Our client with `peers.delta`: one snapshot, then deltas.
    Delta,
}

impl Clients {
    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::Delta => "delta",
        }
    }
}

impl FromStr for Clients {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Self::V1),
            "delta" => Ok(Self::Delta),
            _ => Err(BenchError::InvalidOption {
                option: "clients",
                reason: format!("unknown clients {s:?} (expected v1 or delta)"),
            }),
        }
    }
}

/// How a link subscriber receives in `publish` and `fanout`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Receiver {
    /// `LinkClient::subscribe_with`: a handler counts each message on the
    /// link's own task, as the reference client's `subscribe(topic,
    /// handler)` would.
    #[default]
    Handler,
    /// `LinkClient::subscribe`: each subscriber's `Subscription` stream is
    /// counted by a task of its own (as NATS subscribers are).
    Stream,
}

impl Receiver {
    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handler => "handler",
            Self::Stream => "stream",
        }
    }
}

impl FromStr for Receiver {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "handler" => Ok(Self::Handler),
            "stream" => Ok(Self::Stream),
            _ => Err(BenchError::InvalidOption {
                option: "receiver",
                reason: format!("unknown receiver {s:?} (expected handler or stream)"),
            }),
        }
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            count: None,
            concurrency: 64,
            subscribers: 100,
            slow: 0,
            connections: 10_000,
            hello_concurrency: 64,
            clients: Clients::V1,
            window: 1_000,
            payload_bytes: 80,
            runs: 1,
            idle_timeout: Duration::from_secs(10),
            max_connect_time: Duration::from_secs(120),
            settle: Duration::from_secs(35),
            peer_updates: PeerUpdates::Broadcast,
            receiver: Receiver::Handler,
            tls: false,
            flood_limit: 1_000,
            flood_pairs: 2,
            attacks: Vec::new(),
            attackers_nice: 0,
        }
    }
}

impl BenchOptions {
    /// Checks every knob once; names the first bad one.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |option, reason: &str| {
            Err(BenchError::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.scenarios.is_empty() {
            return bad("scenario", "at least one scenario is needed");
        }
        for (option, ok) in [
            ("count", self.count != Some(0)),
            ("concurrency", self.concurrency > 0),
            ("subscribers", self.subscribers > 0),
            ("connections", self.connections > 0),
            ("hello-concurrency", self.hello_concurrency > 0),
            ("runs", self.runs > 0),
            ("idle-timeout", !self.idle_timeout.is_zero()),
            ("max-connect-time", !self.max_connect_time.is_zero()),
            ("flood-limit", self.flood_limit > 0),
            ("flood-pairs", self.flood_pairs > 0),
        ] {
            if !ok {
                return bad(option, "must be positive");
            }
        }
        if self.payload_bytes < crate::payload::MIN_BYTES {
            return Err(BenchError::InvalidOption {
                option: "payload-bytes",
                reason: format!("must be at least {}", crate::payload::MIN_BYTES),
            });
        }
        if !(0..=19).contains(&self.attackers_nice) {
            return Err(BenchError::InvalidOption {
                option: "attackers-nice",
                reason: "must be 0 to 19".into(),
            });
        }
        if let Some(a) = self
            .attacks
            .iter()
            .find(|a| !crate::link::attack_names().any(|n| n == a.as_str()))
        {
            return Err(BenchError::InvalidOption {
                option: "attacks",
                reason: format!(
                    "no attack `{a}`; one of {}",
                    crate::link::attack_names().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        Ok(())
    }

    /// The flooder's publish limit a hub we start must hold (`None` when
    /// `flood` does not run: the hub then has no limit at all).
    pub fn hub_flood_limit(&self) -> Option<u32> {
        self.scenarios
            .contains(&Scenario::Flood)
            .then_some(self.flood_limit)
    }

    /// N for a scenario.
    pub fn count_for(&self, scenario: Scenario) -> u64 {
        match scenario {
            Scenario::Connections => self.connections as u64,
            s => self.count.unwrap_or_else(|| s.default_count()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_lists_parse() {
        let all = parse_scenarios(&["all".into()]).unwrap();
        assert_eq!(all, Scenario::ALL);
        let two = parse_scenarios(&["send,rpc-seq".into(), "send".into()]).unwrap();
        assert_eq!(two, [Scenario::RpcSeq, Scenario::Send]);
        assert!(parse_scenarios(&["nope".into()]).is_err());
        // flood runs only when named.
        assert!(!all.contains(&Scenario::Flood));
        let flood = parse_scenarios(&["publish,flood".into()]).unwrap();
        assert_eq!(flood, [Scenario::Publish, Scenario::Flood]);
        let o = BenchOptions {
            scenarios: flood,
            ..BenchOptions::default()
        };
        assert_eq!(o.hub_flood_limit(), Some(1000));
        assert_eq!(BenchOptions::default().hub_flood_limit(), None);
        assert_eq!(parse_scenarios(&[]).unwrap(), Scenario::ALL);
    }

    #[test]
    fn validation_names_the_option() {
        let o = BenchOptions {
            concurrency: 0,
            ..BenchOptions::default()
        };
        assert!(matches!(
            o.validate(),
            Err(BenchError::InvalidOption {
                option: "concurrency",
                ..
            })
        ));
        assert!(BenchOptions::default().validate().is_ok());
        let o = BenchOptions {
            count: Some(7),
            ..BenchOptions::default()
        };
        assert_eq!(o.count_for(Scenario::Send), 7);
        assert_eq!(o.count_for(Scenario::Connections), 10_000);
        let o = BenchOptions {
            attacks: vec!["half-open".into(), "nope".into()],
            ..BenchOptions::default()
        };
        assert!(matches!(
            o.validate(),
            Err(BenchError::InvalidOption {
                option: "attacks",
                ..
            })
        ));
        for (nice, ok) in [(-1, false), (0, true), (19, true), (20, false)] {
            let o = BenchOptions {
                attackers_nice: nice,
                ..BenchOptions::default()
            };
            assert_eq!(o.validate().is_ok(), ok, "attackers_nice {nice}");
        }
    }
}

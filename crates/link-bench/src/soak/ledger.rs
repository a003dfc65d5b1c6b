//! The soak's books: who was connected when, what each talker sent, what
//! each peer received, and from those, what was lost, duplicated or out of
//! order. Pure bookkeeping on microseconds since the start of the run, so
//! the rules are unit-tested without a hub.
//!
//! A message **must arrive** (docs/reliability.md, *Soak*) when, with
//! `at` the moment it was handed to the talker's client and `drain` the
//! drain window:
//! - the talker's session (one connection of its client) was up at `at`
//!   and stayed up until at least `at + drain`;
//! - the receiver had a session up at `at` that stayed up until at least
//!   `at + drain`: for a publish, one whose topic subscription the hub had
//!   confirmed by `at`; for a direct send, one the hub had acknowledged
//!   (`hello.ack`) by `at`;
//! - for a publish, the receiver is not the talker (no self-delivery).
//!
//! Anything else may arrive or not; it still counts as duplicated when it
//! arrives twice and as out of order when it overtakes a later message of
//! the same talker session.

/// Microseconds since the start of the run.
pub(crate) type Micros = u64;

/// The two kinds of message a talker sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// To every subscriber of the soak topic.
    Publish = 0,
    /// To one peer.
    Direct = 1,
}

/// One connection of a peer's client.
#[derive(Clone, Copy, Debug)]
struct Session {
    /// `hello.ack` received.
    start: Micros,
    /// The hub it connected to (index of the run's hub URLs), when known.
    hub: Option<usize>,
    /// The hub confirmed the topic subscription (a later server RPC on
    /// the same connection was answered).
    subscribed: Option<Micros>,
    /// We began to close it.
    end: Option<Micros>,
}

impl Session {
    /// Up from `from` (at the latest) to `at + drain` (at least).
    fn covers(&self, from: Option<Micros>, at: Micros, drain: Micros) -> bool {
        from.is_some_and(|f| f <= at) && self.end.is_none_or(|e| e >= at + drain)
    }
}

/// A growable set of sequence numbers.
#[derive(Default, Debug)]
struct Bits(Vec<u64>);

impl Bits {
    /// Adds `i`; false if it was there.
    fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, 1u64 << (i % 64));
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    fn contains(&self, i: u64) -> bool {
        self.0
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }
}

/// What one receiver got from one talker on one flow.
#[derive(Default, Debug)]
struct Inbox {
    got: Bits,
    /// The newest talker session seen, and the highest sequence from it.
    last: Option<(u32, u64)>,
}

/// One message a talker handed to its client.
#[derive(Clone, Copy, Debug)]
struct Sent {
    seq: u64,
    at: Micros,
    /// The talker's session.
    epoch: u32,
    /// The recipient of a direct send.
    to: Option<u32>,
}

/// A delivery seen a second time: when, by whom, from whom, and which of
/// the receiver's sessions was up then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Duplicate {
    pub(crate) at: Micros,
    pub(crate) slot: usize,
    pub(crate) talker: usize,
    pub(crate) flow: Flow,
    pub(crate) seq: u64,
    /// The receiver's session up when it came (`None`: between sessions).
    pub(crate) session: Option<u32>,
}

/// One of a peer's sessions, as the books hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SessionSpan {
    /// Its number among the peer's sessions.
    pub(crate) epoch: u32,
    pub(crate) start: Micros,
    pub(crate) end: Option<Micros>,
    pub(crate) hub: Option<usize>,
}

/// Duplicates the books keep the details of (the count goes on).
const KEPT_DUPLICATES: usize = 4096;

/// Duplicates to one receiver further apart than this are two bursts.
const BURST_GAP: Micros = 5_000_000;

/// A run of duplicates to one receiver (none more than 5 s after the
/// previous one), with the receiver's sessions meanwhile: where they came
/// from, for finding out why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DuplicateBurst {
    /// The receiver's slot (`p<slot>`).
    pub receiver: usize,
    /// Duplicates in the burst (of those the books kept).
    pub count: u64,
    /// Of which topic messages (the rest are direct messages).
    pub publishes: u64,
    /// Distinct talkers among them.
    pub talkers: usize,
    /// The first, seconds since `base`.
    pub first_s: f64,
    /// The last, seconds since `base`.
    pub last_s: f64,
    /// The receiver's sessions up during the burst.
    pub sessions: Vec<BurstSession>,
    /// What the run was doing then (the chaos run: the fault before it).
    pub note: Option<String>,
}

/// One session of a burst's receiver.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BurstSession {
    /// Its number among the peer's sessions.
    pub epoch: u32,
    /// Up from, seconds since `base`.
    pub start_s: f64,
    /// Until (`None`: still up at the end), seconds since `base`.
    pub end_s: Option<f64>,
    /// The hub it was on (index of the run's hub URLs).
    pub hub: Option<usize>,
    /// Duplicates of the burst that came while it was up.
    pub duplicates: u64,
}

/// The books of one soak run.
#[derive(Debug)]
pub(crate) struct Ledger {
    drain: Micros,
    talkers: usize,
    /// Per peer slot, its sessions in order.
    sessions: Vec<Vec<Session>>,
    /// Per talker and flow: the next sequence number.
    next: Vec<[u64; 2]>,
    /// Per talker and flow: what it sent.
    sent: Vec<[Vec<Sent>; 2]>,
    /// Per receiver, talker and flow.
    inbox: Vec<[Inbox; 2]>,
    duplicated: u64,
    /// The first [`KEPT_DUPLICATES`] duplicates.
    duplicates: Vec<Duplicate>,
    out_of_order: u64,
    received: u64,
}

/// What the books say at the end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// Messages handed to a client (publishes count once).
    pub sent: u64,
    /// Deliveries that had to arrive (a publish counts once per receiver).
    pub must_arrive: u64,
    /// Of those, the ones that never did.
    pub lost: u64,
    /// Deliveries seen a second time (or more) by the same receiver.
    pub duplicated: u64,
    /// Deliveries that came after a later one of the same talker session.
    pub out_of_order: u64,
    /// Every delivery received.
    pub received: u64,
}

impl Ledger {
    /// Books for `peers` slots, the first `talkers` of which send.
    pub(crate) fn new(peers: usize, talkers: usize, drain: Micros) -> Self {
        Self {
            drain,
            talkers,
            sessions: vec![Vec::new(); peers],
            next: vec![[0; 2]; talkers],
            sent: (0..talkers).map(|_| [Vec::new(), Vec::new()]).collect(),
            inbox: (0..peers * talkers).map(|_| Default::default()).collect(),
            duplicated: 0,
            duplicates: Vec::new(),
            out_of_order: 0,
            received: 0,
        }
    }

    /// Peer `slot` got `hello.ack` at `now`: its new session's number.
    pub(crate) fn session_start(&mut self, slot: usize, now: Micros) -> u32 {
        let s = &mut self.sessions[slot];
        s.push(Session {
            start: now,
            hub: None,
            subscribed: None,
            end: None,
        });
        (s.len() - 1) as u32
    }

    /// Session `epoch` of peer `slot` is on hub `hub`.
    pub(crate) fn session_hub(&mut self, slot: usize, epoch: u32, hub: usize) {
        if let Some(s) = self.sessions[slot].get_mut(epoch as usize) {
            s.hub = Some(hub);
        }
    }

    /// Peer `slot`'s sessions that were up at some time in `from..=until`.
    fn sessions_between(&self, slot: usize, from: Micros, until: Micros) -> Vec<SessionSpan> {
        self.sessions[slot]
            .iter()
            .enumerate()
            .filter(|(_, s)| s.start <= until && s.end.is_none_or(|e| e >= from))
            .map(|(i, s)| SessionSpan {
                epoch: i as u32,
                start: s.start,
                end: s.end,
                hub: s.hub,
            })
            .collect()
    }

    /// The kept duplicates as bursts per receiver, in order of their
    /// first duplicate; times in seconds since `base`.
    pub(crate) fn duplicate_bursts(&self, base: Micros) -> Vec<DuplicateBurst> {
        let secs = |t: Micros| t.saturating_sub(base) as f64 / 1e6;
        let mut by_receiver: std::collections::BTreeMap<usize, Vec<&Duplicate>> =
            Default::default();
        for d in &self.duplicates {
            by_receiver.entry(d.slot).or_default().push(d);
        }
        let mut bursts = Vec::new();
        for (slot, dups) in by_receiver {
            for run in dups.chunk_by(|a, b| b.at.saturating_sub(a.at) <= BURST_GAP) {
                let (first, last) = (run[0].at, run[run.len() - 1].at);
                let talkers: std::collections::BTreeSet<usize> =
                    run.iter().map(|d| d.talker).collect();
                let sessions = self
                    .sessions_between(slot, first, last)
                    .into_iter()
                    .map(|s| BurstSession {
                        epoch: s.epoch,
                        start_s: secs(s.start),
                        end_s: s.end.map(secs),
                        hub: s.hub,
                        duplicates: run.iter().filter(|d| d.session == Some(s.epoch)).count()
                            as u64,
                    })
                    .collect();
                bursts.push(DuplicateBurst {
                    receiver: slot,
                    count: run.len() as u64,
                    publishes: run.iter().filter(|d| d.flow == Flow::Publish).count() as u64,
                    talkers: talkers.len(),
                    first_s: secs(first),
                    last_s: secs(last),
                    sessions,
                    note: None,
                });
            }
        }
        bursts.sort_by(|a, b| a.first_s.total_cmp(&b.first_s));
        bursts
    }

    /// The hub confirmed session `epoch`'s subscription at `now`.
    pub(crate) fn subscribed(&mut self, slot: usize, epoch: u32, now: Micros) {
        if let Some(s) = self.sessions[slot].get_mut(epoch as usize) {
            s.subscribed.get_or_insert(now);
        }
    }

    /// We begin closing peer `slot`'s session at `now`.
    pub(crate) fn session_end(&mut self, slot: usize, now: Micros) {
        if let Some(s) = self.sessions[slot].last_mut() {
            s.end.get_or_insert(now);
        }
    }

    /// The session peer `slot` has up, if any.
    pub(crate) fn live(&self, slot: usize) -> Option<u32> {
        let s = self.sessions[slot].last()?;
        s.end
            .is_none()
            .then(|| (self.sessions[slot].len() - 1) as u32)
    }

    /// Peer `slot` has a session up whose subscription the hub confirmed.
    pub(crate) fn up(&self, slot: usize) -> bool {
        self.sessions[slot]
            .last()
            .is_some_and(|s| s.end.is_none() && s.subscribed.is_some())
    }

    /// Takes the next sequence number of `talker` on `flow`, with the
    /// talker's session; `None` when the talker has no session up.
    pub(crate) fn next_seq(&mut self, talker: usize, flow: Flow) -> Option<(u64, u32)> {
        let epoch = self.live(talker)?;
        let n = &mut self.next[talker][flow as usize];
        let seq = *n;
        *n += 1;
        Some((seq, epoch))
    }

    /// The talker's client took the message (`to`: a direct's recipient).
    pub(crate) fn sent(
        &mut self,
        talker: usize,
        flow: Flow,
        seq: u64,
        epoch: u32,
        at: Micros,
        to: Option<usize>,
    ) {
        self.sent[talker][flow as usize].push(Sent {
            seq,
            at,
            epoch,
            to: to.map(|t| t as u32),
        });
    }

    /// Receiver `slot` got message `seq` of `talker`'s session `epoch` at
    /// `now`. Ignores talkers and slots out of range (a stray payload).
    pub(crate) fn received(
        &mut self,
        slot: usize,
        talker: usize,
        flow: Flow,
        (epoch, seq): (u32, u64),
        now: Micros,
    ) {
        if talker >= self.talkers || slot >= self.sessions.len() {
            return;
        }
        self.received += 1;
        let inbox = &mut self.inbox[slot * self.talkers + talker][flow as usize];
        if !inbox.got.insert(seq) {
            self.duplicated += 1;
            if self.duplicates.len() < KEPT_DUPLICATES {
                let session = self.live(slot);
                self.duplicates.push(Duplicate {
                    at: now,
                    slot,
                    talker,
                    flow,
                    seq,
                    session,
                });
            }
            return;
        }
        match inbox.last {
            Some((e, s)) if e == epoch => {
                if seq < s {
                    self.out_of_order += 1;
                } else {
                    inbox.last = Some((e, seq));
                }
            }
            Some((e, _)) if e > epoch => {} // a straggler of an older session
            _ => inbox.last = Some((epoch, seq)),
        }
    }

    /// Peer `slot` had one session up from `from` (or before) until
    /// `until` (or later).
    pub(crate) fn stayed_up(&self, slot: usize, from: Micros, until: Micros) -> bool {
        self.session_at(slot, from)
            .is_some_and(|s| s.end.is_none_or(|e| e >= until))
    }

    /// Messages handed to clients and deliveries received so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let sent = self
            .sent
            .iter()
            .flat_map(|f| f.iter())
            .map(|log| log.len() as u64)
            .sum();
        (sent, self.received)
    }

    /// The session of `slot` that was up at `at` (the last one started by then).
    fn session_at(&self, slot: usize, at: Micros) -> Option<&Session> {
        self.sessions[slot].iter().rev().find(|s| s.start <= at)
    }

    /// Counts what was lost of what had to arrive by now.
    pub(crate) fn delivery(&self) -> Delivery {
        let mut d = Delivery {
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
            received: self.received,
            ..Delivery::default()
        };
        for (talker, flows) in self.sent.iter().enumerate() {
            for (f, log) in flows.iter().enumerate() {
                d.sent += log.len() as u64;
                for m in log {
                    let Some(mine) = self.sessions[talker].get(m.epoch as usize) else {
                        continue;
                    };
                    if !mine.covers(Some(mine.start), m.at, self.drain) {
                        continue;
                    }
                    let mut check = |slot: usize| {
                        let Some(s) = self.session_at(slot, m.at) else {
                            return;
                        };
                        let from = if f == Flow::Publish as usize {
                            s.subscribed
                        } else {
                            Some(s.start)
                        };
                        if s.covers(from, m.at, self.drain) {
                            d.must_arrive += 1;
                            if !self.inbox[slot * self.talkers + talker][f]
                                .got
                                .contains(m.seq)
                            {
                                d.lost += 1;
                            }
                        }
                    };
                    match m.to {
                        Some(to) => check(to as usize),
                        None => (0..self.sessions.len())
                            .filter(|&r| r != talker)
                            .for_each(&mut check),
                    }
                }
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAIN: Micros = 1_000;

    /// Three peers, the first two talk; all up and subscribed from t=0..10.
    fn books() -> Ledger {
        let mut l = Ledger::new(3, 2, DRAIN);
        for slot in 0..3 {
            let e = l.session_start(slot, slot as u64);
            l.subscribed(slot, e, 10);
        }
        l
    }

    fn publish(l: &mut Ledger, talker: usize, at: Micros) -> (u64, u32) {
        let (seq, epoch) = l.next_seq(talker, Flow::Publish).unwrap();
        l.sent(talker, Flow::Publish, seq, epoch, at, None);
        (seq, epoch)
    }

    #[test]
    fn a_publish_must_reach_every_other_subscriber_once() {
        let mut l = books();
        let (seq, e) = publish(&mut l, 0, 100);
        l.received(1, 0, Flow::Publish, (e, seq), 0);
        let d = l.delivery();
        assert_eq!(
            (d.sent, d.must_arrive, d.lost),
            (1, 2, 1),
            "slot 2 missed it"
        );
        l.received(2, 0, Flow::Publish, (e, seq), 0);
        l.received(2, 0, Flow::Publish, (e, seq), 0);
        let d = l.delivery();
        assert_eq!((d.lost, d.duplicated, d.received), (0, 1, 3));
    }

    #[test]
    fn before_the_subscription_was_confirmed_nothing_must_arrive() {
        let mut l = Ledger::new(2, 1, DRAIN);
        l.session_start(0, 0);
        let e1 = l.session_start(1, 0);
        publish(&mut l, 0, 5);
        l.subscribed(1, e1, 6);
        assert_eq!(l.delivery().must_arrive, 0);
        publish(&mut l, 0, 6);
        assert_eq!((l.delivery().must_arrive, l.delivery().lost), (1, 1));
    }

    #[test]
    fn a_session_ending_within_the_drain_window_excuses_the_loss() {
        let mut l = books();
        publish(&mut l, 0, 100);
        l.session_end(2, 100 + DRAIN - 1); // the receiver left too soon
        let (seq, e) = publish(&mut l, 1, 100);
        l.session_end(1, 100 + DRAIN); // the talker stayed exactly long enough
        let d = l.delivery();
        // Talker 0 → slot 1 (slot 2 left early); talker 1 → slot 0 only.
        assert_eq!((d.must_arrive, d.lost), (2, 2));
        l.received(0, 1, Flow::Publish, (e, seq), 0);
        assert_eq!(l.delivery().lost, 1);
        // A talker without a session up takes no sequence number.
        assert_eq!(l.next_seq(1, Flow::Publish), None);
    }

    #[test]
    fn a_direct_must_reach_its_recipient_only_while_it_is_up() {
        let mut l = books();
        let (seq, e) = l.next_seq(0, Flow::Direct).unwrap();
        l.sent(0, Flow::Direct, seq, e, 50, Some(2));
        l.session_end(2, 60);
        let (seq2, _) = l.next_seq(0, Flow::Direct).unwrap();
        l.sent(0, Flow::Direct, seq2, e, 70, Some(1));
        let d = l.delivery();
        assert_eq!((d.sent, d.must_arrive, d.lost), (2, 1, 1));
        // A new session of slot 2 counts from its own ack.
        let e2 = l.session_start(2, 80);
        l.subscribed(2, e2, 90);
        let (seq3, _) = l.next_seq(0, Flow::Direct).unwrap();
        l.sent(0, Flow::Direct, seq3, e, 85, Some(2));
        l.received(2, 0, Flow::Direct, (e, seq3), 0);
        assert_eq!(l.delivery().must_arrive, 2);
    }

    #[test]
    fn order_is_per_talker_session() {
        let mut l = books();
        l.received(1, 0, Flow::Publish, (0, 5), 0);
        l.received(1, 0, Flow::Publish, (0, 3), 0);
        assert_eq!(l.delivery().out_of_order, 1);
        // A later talker session starts its own order; an older one's
        // straggler is not out of order.
        l.received(1, 0, Flow::Publish, (1, 4), 0);
        l.received(1, 0, Flow::Publish, (0, 6), 0);
        l.received(1, 0, Flow::Publish, (1, 7), 0);
        let d = l.delivery();
        assert_eq!((d.out_of_order, d.duplicated), (1, 0));
        // Stray talkers and slots are ignored.
        l.received(1, 9, Flow::Publish, (0, 1), 0);
        l.received(9, 0, Flow::Publish, (0, 1), 0);
        assert_eq!(l.delivery().received, 5);
    }

    #[test]
    fn duplicates_come_in_bursts_per_receiver_with_its_sessions() {
        let mut l = books();
        l.session_hub(1, 0, 2);
        let (seq, e) = publish(&mut l, 0, 100);
        let (seq2, _) = publish(&mut l, 1, 100);
        l.received(1, 0, Flow::Publish, (e, seq), 1_000_000);
        l.received(1, 0, Flow::Publish, (e, seq), 2_000_000);
        l.session_end(1, 2_500_000);
        let e1 = l.session_start(1, 3_000_000);
        l.received(1, 1, Flow::Publish, (e, seq2), 3_000_000);
        l.received(1, 1, Flow::Publish, (e, seq2), 4_000_000);
        // More than 5 s later: a second burst.
        l.received(1, 1, Flow::Publish, (e, seq2), 10_000_000);
        l.received(2, 0, Flow::Publish, (e, seq), 500_000);
        l.received(2, 0, Flow::Publish, (e, seq), 600_000);
        let b = l.duplicate_bursts(1_000_000);
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].receiver, b[0].count, b[0].first_s), (2, 1, 0.0));
        assert_eq!(
            (b[1].receiver, b[1].count, b[1].talkers, b[1].publishes),
            (1, 2, 2, 2)
        );
        assert_eq!((b[1].first_s, b[1].last_s), (1.0, 3.0));
        let sessions: Vec<(u32, Option<usize>, u64)> = b[1]
            .sessions
            .iter()
            .map(|s| (s.epoch, s.hub, s.duplicates))
            .collect();
        assert_eq!(sessions, vec![(0, Some(2), 1), (e1, None, 1)]);
        assert_eq!((b[2].count, b[2].first_s), (1, 9.0));
    }

    #[test]
    fn bits_grow_and_remember() {
        let mut b = Bits::default();
        assert!(b.insert(1000));
        assert!(!b.insert(1000));
        assert!(b.contains(1000) && !b.contains(999) && !b.contains(100_000));
    }
}

//! The in-memory broker: topics as append-only logs, durable subscriptions with their
//! dispatchers, and the readers' wake-ups. Everything here runs under the server's one mutex
//! and never awaits.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;

use super::wire::{self, ConsumerParams, InitialPosition, NewMessage, Rejection, SubType};

/// Everything behind the server's mutex. `Debug` shows no one-time password or JWT.
#[derive(Debug)]
pub(super) struct State {
    pub(super) topics: HashMap<String, Topic>,
    /// The ledger of the last topic created; starts at a random base per server start, so that
    /// message ids are not reused after a restart.
    next_ledger: u64,
    next_conn: u64,
    /// One-time passwords issued and not used yet, with their tenants.
    pub(super) otps: super::auth::Otps,
    /// How many upgrades to refuse, and with which status.
    pub(super) refuse_left: usize,
    pub(super) refuse_status: u16,
    /// How many REST calls to fail, and with which status.
    pub(super) rest_fail_left: usize,
    pub(super) rest_fail_status: u16,
    /// The JWTs issued by `/_open/auth`.
    pub(super) sessions: super::auth::Sessions,
}

impl Default for State {
    fn default() -> Self {
        State {
            topics: HashMap::new(),
            next_ledger: ledger_base(),
            next_conn: 0,
            otps: Default::default(),
            refuse_left: 0,
            refuse_status: 0,
            rest_fail_left: 0,
            rest_fail_status: 0,
            sessions: Default::default(),
        }
    }
}

/// A random first ledger for a server start: a multiple of 2^20 below 2^52, so that ids stay
/// `<ledger>:<entry>` with a ledger every SDK reads as an integer (even JavaScript's doubles),
/// and a server can create a million topics before its ledgers could meet another start's.
fn ledger_base() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    (h.finish() % (1 << 32)) << 20
}

impl State {
    /// A fresh connection id.
    pub(super) fn next_conn(&mut self) -> u64 {
        self.next_conn += 1;
        self.next_conn
    }

    /// The topic, created on first use.
    pub(super) fn topic(&mut self, name: &str) -> &mut Topic {
        let next_ledger = &mut self.next_ledger;
        self.topics.entry(name.to_string()).or_insert_with(|| {
            *next_ledger += 1;
            Topic::new(*next_ledger)
        })
    }
}

/// One stored message.
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) id: String,
    pub(super) payload: Bytes,
    pub(super) properties: BTreeMap<String, String>,
    pub(super) key: Option<String>,
    pub(super) event_time: Option<String>,
    /// Shared with the messages stored in the same millisecond.
    pub(super) publish_time: Arc<str>,
}

impl Stored {
    /// The consumer/reader frame for this message.
    pub(super) fn frame(&self, redelivery_count: u32) -> String {
        wire::delivery(
            &self.id,
            &self.payload,
            &self.properties,
            &self.publish_time,
            redelivery_count,
            self.key.as_deref(),
            self.event_time.as_deref(),
        )
    }
}

/// A topic: an append-only log plus its subscriptions and readers.
#[derive(Debug)]
pub(super) struct Topic {
    /// Distinguishes this topic's message ids from every other topic's.
    ledger: u64,
    pub(super) messages: Vec<Stored>,
    pub(super) subs: HashMap<String, Subscription>,
    /// Wakes each connected reader when a message is stored.
    pub(super) readers: HashMap<u64, Arc<Notify>>,
    /// Names of connected producers that gave a `producerName`.
    pub(super) producer_names: HashSet<String>,
    /// The last publish time given out, and its millisecond since the epoch: formatted once
    /// per millisecond, not once per message.
    publish_time: (u128, Arc<str>),
}

impl Topic {
    fn new(ledger: u64) -> Self {
        Topic {
            ledger,
            messages: Vec::new(),
            subs: HashMap::new(),
            readers: HashMap::new(),
            producer_names: HashSet::new(),
            publish_time: (0, Arc::from(wire::iso8601(SystemTime::UNIX_EPOCH))),
        }
    }

    /// Stores a message, hands it to the subscriptions' dispatchers and wakes the readers.
    /// Returns its id.
    pub(super) fn append(&mut self, msg: NewMessage) -> String {
        let id = wire::message_id(self.ledger, self.messages.len());
        let publish_time = self.publish_time();
        self.messages.push(Stored {
            id: id.clone(),
            payload: msg.payload,
            properties: msg.properties,
            key: msg.key,
            event_time: msg.event_time,
            publish_time,
        });
        if !self.subs.is_empty() {
            let now = Instant::now();
            for sub in self.subs.values_mut() {
                sub.dispatch(&self.messages, now);
            }
        }
        for reader in self.readers.values() {
            reader.notify_one();
        }
        id
    }

    /// Now, as a publish time.
    fn publish_time(&mut self) -> Arc<str> {
        let now = SystemTime::now();
        let ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        if ms != self.publish_time.0 {
            self.publish_time = (ms, Arc::from(wire::iso8601(now)));
        }
        self.publish_time.1.clone()
    }

    /// The log position of a message id of this topic, if it names a stored message.
    pub(super) fn entry_of(&self, id: &str) -> Option<usize> {
        match wire::parse_message_id(id) {
            Some((ledger, entry)) if ledger == self.ledger && entry < self.messages.len() => {
                Some(entry)
            }
            _ => None,
        }
    }

    /// Where a reader starting after `id` begins; `None` if the id is not of this topic.
    pub(super) fn position_after(&self, id: &str) -> Option<usize> {
        match wire::parse_message_id(id) {
            Some((ledger, entry)) if ledger == self.ledger => {
                Some(entry.saturating_add(1).min(self.messages.len()))
            }
            _ => None,
        }
    }

    /// Adds a consumer to a subscription, creating the subscription if needed.
    pub(super) fn subscribe(
        &mut self,
        name: &str,
        params: &ConsumerParams,
        conn: u64,
        notify: Arc<Notify>,
    ) -> Result<(), Rejection> {
        let start = match params.initial {
            InitialPosition::Latest => self.messages.len(),
            InitialPosition::Earliest => 0,
        };
        let sub = self
            .subs
            .entry(name.to_string())
            .or_insert_with(|| Subscription::new(params.kind, start));
        if !sub.consumers.is_empty() {
            if sub.kind != params.kind {
                return Err(Rejection::new(
                    409,
                    "Failed to subscribe: Subscription is of different type",
                ));
            }
            if sub.kind == SubType::Exclusive {
                return Err(Rejection::new(
                    409,
                    "Failed to subscribe: Exclusive consumer is already connected",
                ));
            }
        }
        sub.kind = params.kind;
        sub.consumers.push(Slot {
            conn,
            queue: params.queue.max(1),
            ack_timeout: params.ack_timeout,
            in_flight: BTreeMap::new(),
            outbox: VecDeque::new(),
            notify,
        });
        sub.dispatch(&self.messages, Instant::now());
        Ok(())
    }
}

/// A message delivered to a consumer and not acknowledged yet.
#[derive(Debug)]
struct Flight {
    redelivery_count: u32,
    /// When the ack timeout redelivers it.
    deadline: Option<Instant>,
    /// Taken out of the outbox (handed to the connection to write).
    taken: bool,
}

/// A message waiting to be delivered again.
#[derive(Debug)]
struct Pending {
    redelivery_count: u32,
    /// Not before this time (negative acknowledgements).
    ready_at: Option<Instant>,
}

/// One connected consumer.
#[derive(Debug)]
struct Slot {
    conn: u64,
    queue: usize,
    ack_timeout: Option<Duration>,
    in_flight: BTreeMap<usize, Flight>,
    /// Assigned, not yet handed to the connection.
    outbox: VecDeque<usize>,
    notify: Arc<Notify>,
}

impl Slot {
    fn has_room(&self) -> bool {
        self.in_flight.len() < self.queue
    }
}

/// A durable subscription: its position in the log, the messages to deliver again, and the
/// consumers in connect order.
#[derive(Debug)]
pub(super) struct Subscription {
    kind: SubType,
    /// The first entry never dispatched.
    cursor: usize,
    /// Entries before `cursor` that must be delivered again, in log order.
    pending: BTreeMap<usize, Pending>,
    consumers: Vec<Slot>,
    /// Round-robin position for Shared.
    next_rr: usize,
    /// The earliest time a delayed pending message becomes ready.
    next_ready: Option<Instant>,
}

/// A stable hash for Key_Shared (FNV-1a).
fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `now + d`, saturating far in the future instead of overflowing (delays come from clients).
fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(now)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Subscription {
    fn new(kind: SubType, cursor: usize) -> Self {
        Subscription {
            kind,
            cursor,
            pending: BTreeMap::new(),
            consumers: Vec::new(),
            next_rr: 0,
            next_ready: None,
        }
    }

    /// Redelivery count for a message whose consumer went away or whose ack timed out: the
    /// single-active dispatchers (Exclusive, Failover) do not track redeliveries, so it stays
    /// as it was; Shared and Key_Shared count it.
    fn requeued_count(&self, count: u32) -> u32 {
        if self.kind.single_active() {
            count
        } else {
            count.saturating_add(1)
        }
    }

    /// Removes a consumer; what it had in flight is delivered again, before newer messages.
    pub(super) fn unsubscribe(&mut self, conn: u64, messages: &[Stored]) {
        let Some(pos) = self.consumers.iter().position(|s| s.conn == conn) else {
            return;
        };
        let slot = self.consumers.remove(pos);
        for (entry, flight) in slot.in_flight {
            let redelivery_count = self.requeued_count(flight.redelivery_count);
            self.pending.insert(
                entry,
                Pending {
                    redelivery_count,
                    ready_at: None,
                },
            );
        }
        if self.next_rr > pos {
            self.next_rr -= 1;
        }
        self.dispatch(messages, Instant::now());
    }

    /// Acknowledges an entry, wherever it is (any consumer's in-flight set or the pending set):
    /// acknowledgements belong to the subscription, not to a connection. False if it was not
    /// outstanding.
    pub(super) fn ack(&mut self, conn: u64, entry: usize, messages: &[Stored]) -> bool {
        let own = self
            .consumers
            .iter_mut()
            .find(|s| s.conn == conn)
            .is_some_and(|s| s.in_flight.remove(&entry).is_some());
        let found = own
            || self.pending.remove(&entry).is_some()
            || self
                .consumers
                .iter_mut()
                .any(|s| s.in_flight.remove(&entry).is_some());
        if found {
            self.dispatch(messages, Instant::now());
        }
        found
    }

    /// Negatively acknowledges an in-flight entry: it is delivered again after `delay`, with
    /// its redelivery count plus one.
    pub(super) fn nack(&mut self, entry: usize, delay: Duration, messages: &[Stored]) {
        let Some(flight) = self
            .consumers
            .iter_mut()
            .find_map(|s| s.in_flight.remove(&entry))
        else {
            return;
        };
        let now = Instant::now();
        self.pending.insert(
            entry,
            Pending {
                redelivery_count: flight.redelivery_count.saturating_add(1),
                ready_at: (!delay.is_zero()).then(|| later(now, delay)),
            },
        );
        self.dispatch(messages, now);
    }

    /// Moves this consumer's messages whose ack timeout passed back to pending.
    fn expire(&mut self, conn: u64, now: Instant) {
        let single = self.kind.single_active();
        let Some(slot) = self.consumers.iter_mut().find(|s| s.conn == conn) else {
            return;
        };
        let expired: Vec<usize> = slot
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline.is_some_and(|d| d <= now))
            .map(|(&e, _)| e)
            .collect();
        for entry in expired {
            if let Some(f) = slot.in_flight.remove(&entry) {
                let redelivery_count = if single {
                    f.redelivery_count
                } else {
                    f.redelivery_count.saturating_add(1)
                };
                self.pending.insert(
                    entry,
                    Pending {
                        redelivery_count,
                        ready_at: None,
                    },
                );
            }
        }
    }

    /// Hands this consumer's newly assigned messages to its connection: (entry, redelivery
    /// count) in assignment order. Also returns when the connection should look again even if
    /// nobody wakes it (a delayed redelivery or an ack timeout).
    pub(super) fn take(
        &mut self,
        conn: u64,
        messages: &[Stored],
        now: Instant,
    ) -> (Vec<(usize, u32)>, Option<Instant>) {
        self.expire(conn, now);
        self.dispatch(messages, now);
        let next_ready = self.next_ready;
        let Some(slot) = self.consumers.iter_mut().find(|s| s.conn == conn) else {
            return (Vec::new(), next_ready);
        };
        let mut out = Vec::with_capacity(slot.outbox.len());
        while let Some(entry) = slot.outbox.pop_front() {
            if let Some(f) = slot.in_flight.get_mut(&entry) {
                if !f.taken {
                    f.taken = true;
                    out.push((entry, f.redelivery_count));
                }
            }
        }
        let deadline = slot.in_flight.values().filter_map(|f| f.deadline).min();
        (out, earliest(next_ready, deadline))
    }

    fn room(&self) -> bool {
        if self.kind.single_active() {
            self.consumers.first().is_some_and(Slot::has_room)
        } else {
            self.consumers.iter().any(Slot::has_room)
        }
    }

    /// Which consumer gets a message, if one can take it now.
    fn pick(&mut self, key: Option<&str>) -> Option<usize> {
        let n = self.consumers.len();
        if n == 0 {
            return None;
        }
        match self.kind {
            SubType::Exclusive | SubType::Failover => self.consumers[0].has_room().then_some(0),
            SubType::Shared => {
                for i in 0..n {
                    let c = (self.next_rr + i) % n;
                    if self.consumers[c].has_room() {
                        self.next_rr = (c + 1) % n;
                        return Some(c);
                    }
                }
                None
            }
            SubType::KeyShared => {
                // n fits in u64 on every supported platform; the remainder is below n.
                let c = usize::try_from(key_hash(key.unwrap_or("")) % n as u64).unwrap_or(0);
                self.consumers[c].has_room().then_some(c)
            }
        }
    }

    fn assign(&mut self, c: usize, entry: usize, redelivery_count: u32, now: Instant) {
        let slot = &mut self.consumers[c];
        slot.in_flight.insert(
            entry,
            Flight {
                redelivery_count,
                deadline: slot.ack_timeout.map(|d| later(now, d)),
                taken: false,
            },
        );
        slot.outbox.push_back(entry);
        slot.notify.notify_one();
    }

    /// Assigns what can be delivered now: first the pending messages that are ready, in log
    /// order, then new ones, as long as the chosen consumers have room.
    pub(super) fn dispatch(&mut self, messages: &[Stored], now: Instant) {
        let mut ready = Vec::new();
        self.next_ready = None;
        for (&entry, p) in &self.pending {
            match p.ready_at {
                Some(t) if t > now => self.next_ready = earliest(self.next_ready, Some(t)),
                _ => ready.push(entry),
            }
        }
        let key_shared = self.kind == SubType::KeyShared;
        for entry in ready {
            if !self.room() {
                return;
            }
            let key = messages.get(entry).and_then(|m| m.key.as_deref());
            match self.pick(key) {
                Some(c) => {
                    if let Some(p) = self.pending.remove(&entry) {
                        self.assign(c, entry, p.redelivery_count, now);
                    }
                }
                // Key_Shared: this key's consumer is full; others may take other keys.
                None if key_shared => {}
                None => return,
            }
        }
        while self.cursor < messages.len() {
            if !self.room() {
                return;
            }
            let entry = self.cursor;
            match self.pick(messages[entry].key.as_deref()) {
                Some(c) => {
                    self.cursor += 1;
                    self.assign(c, entry, 0, now);
                }
                None if key_shared => {
                    // Park it, in order, until its consumer has room.
                    self.cursor += 1;
                    self.pending.insert(
                        entry,
                        Pending {
                            redelivery_count: 0,
                            ready_at: None,
                        },
                    );
                }
                None => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_debug_redacts_one_time_passwords_and_jwts() {
        let mut st = State::default();
        assert!(st.otps.insert("otp-in-clear".to_string()));
        let jwt = st
            .sessions
            .issue("t", "e@x", Duration::from_secs(60), "nonce");
        let shown = format!("{st:?}");
        assert!(!shown.contains("otp-in-clear"), "{shown}");
        assert!(!shown.contains(&jwt), "{shown}");
    }

    #[test]
    fn each_start_numbers_its_ledgers_from_its_own_base() {
        let (a, b) = (State::default(), State::default());
        assert_ne!(a.next_ledger, b.next_ledger);
        assert!(a.next_ledger < 1 << 52 && b.next_ledger < 1 << 52);
    }

    fn params(kind: SubType, queue: usize) -> ConsumerParams {
        ConsumerParams {
            kind,
            queue,
            initial: InitialPosition::Latest,
            ack_timeout: None,
            nack_delay: Duration::from_millis(100),
        }
    }

    fn publish(t: &mut Topic, n: usize) {
        for i in 0..n {
            t.append(NewMessage {
                payload: Bytes::from(format!("m{i}")),
                properties: BTreeMap::new(),
                key: Some(format!("k{}", i % 7)),
                context: None,
                event_time: None,
            });
        }
    }

    fn take(t: &mut Topic, sub: &str, conn: u64) -> Vec<(usize, u32)> {
        let Topic { messages, subs, .. } = t;
        subs.get_mut(sub)
            .unwrap()
            .take(conn, messages, Instant::now())
            .0
    }

    #[test]
    fn exclusive_flow_control_and_redelivery_order() {
        let mut st = State::default();
        let t = st.topic("persistent://a/b/c");
        t.subscribe("s", &params(SubType::Exclusive, 3), 1, Arc::default())
            .unwrap();
        assert_eq!(
            t.subscribe("s", &params(SubType::Exclusive, 3), 2, Arc::default())
                .unwrap_err()
                .status,
            409
        );
        publish(t, 5);
        assert_eq!(take(t, "s", 1), vec![(0, 0), (1, 0), (2, 0)]);
        assert!(take(t, "s", 1).is_empty(), "queue of 3 is full");
        let Topic { messages, subs, .. } = t;
        assert!(subs.get_mut("s").unwrap().ack(1, 1, messages));
        assert_eq!(take(t, "s", 1), vec![(3, 0)]);
        let Topic { messages, subs, .. } = t;
        subs.get_mut("s").unwrap().unsubscribe(1, messages);
        t.subscribe("s", &params(SubType::Exclusive, 10), 3, Arc::default())
            .unwrap();
        // Unacked 0, 2, 3 again, in order, count 0, then the new 4.
        assert_eq!(take(t, "s", 3), vec![(0, 0), (2, 0), (3, 0), (4, 0)]);
    }

    #[test]
    fn shared_round_robin_and_key_shared_affinity() {
        let mut st = State::default();
        let t = st.topic("persistent://a/b/c");
        for conn in [1, 2] {
            t.subscribe("s", &params(SubType::Shared, 100), conn, Arc::default())
                .unwrap();
        }
        publish(t, 10);
        assert_eq!(take(t, "s", 1).len(), 5);
        assert_eq!(take(t, "s", 2).len(), 5);
        let Topic { messages, subs, .. } = t;
        subs.get_mut("s").unwrap().unsubscribe(2, messages);
        let again = take(t, "s", 1);
        assert_eq!(again.len(), 5);
        assert!(again.iter().all(|&(_, c)| c == 1), "{again:?}");

        let t = st.topic("persistent://a/b/k");
        for conn in [1, 2, 3] {
            t.subscribe("s", &params(SubType::KeyShared, 1000), conn, Arc::default())
                .unwrap();
        }
        publish(t, 70);
        let mut owner = HashMap::new();
        for conn in [1, 2, 3] {
            for (entry, _) in take(t, "s", conn) {
                let key = t.messages[entry].key.clone().unwrap();
                assert_eq!(*owner.entry(key).or_insert(conn), conn);
            }
        }
        assert_eq!(owner.len(), 7);
    }

    #[test]
    fn nack_is_delayed_and_counted() {
        let mut st = State::default();
        let t = st.topic("persistent://a/b/c");
        t.subscribe("s", &params(SubType::Exclusive, 10), 1, Arc::default())
            .unwrap();
        publish(t, 2);
        assert_eq!(take(t, "s", 1).len(), 2);
        let Topic { messages, subs, .. } = t;
        let sub = subs.get_mut("s").unwrap();
        sub.nack(0, Duration::from_secs(60), messages);
        let (now, wake) = sub.take(1, messages, Instant::now());
        assert!(now.is_empty());
        assert!(wake.is_some());
        sub.nack(1, Duration::ZERO, messages);
        assert_eq!(sub.take(1, messages, Instant::now()).0, vec![(1, 1)]);
        assert_eq!(
            sub.take(1, messages, Instant::now() + Duration::from_secs(61))
                .0,
            vec![(0, 1)]
        );
    }
}

//! Effectively-once delivery: the idempotency key a [`Producer`](super::Producer) puts on every
//! message, and the bounded windows a [`Consumer`](super::Consumer) recognises repeats with.
//!
//! # The key
//!
//! Every message a producer publishes carries the property [`IDEMPOTENCY_KEY`]
//! (`sw-idempotency-key`), set once when the message is accepted and never changed by a re-send:
//! `<producer id>-<sequence number>`, where the producer id is 16 random hex digits per
//! `Producer` (or the one set with [`ProducerConfig::producer_id`](super::ProducerConfig::producer_id))
//! and the sequence number counts the messages that producer accepted, from 0. A key the
//! application set itself (the same property) is kept as it is. Pulsar's own de-duplication
//! (`producerName` + `sequenceId`) is not available over the WebSocket API on GDN, so the crate
//! does it end to end.
//!
//! # The windows
//!
//! A consumer remembers the keys it handed over and the message ids it handed over and
//! acknowledged, each in a window bounded in entries and in bytes (each entry costs its text plus
//! about [`ENTRY_OVERHEAD`] bytes). Beyond a window the oldest entries are forgotten, and a
//! repeat of a forgotten one is delivered again: at-least-once.

use std::collections::{HashMap, VecDeque};

/// The message property that carries a message's idempotency key: `sw-idempotency-key`.
pub const IDEMPOTENCY_KEY: &str = "sw-idempotency-key";

/// Bytes a window entry costs beyond its text: the map's and the order queue's bookkeeping, and
/// the strings' headers. An estimate: 96.
pub const ENTRY_OVERHEAD: usize = 96;

/// A set of recent keys with a value each, bounded in entries and in bytes; the oldest entries
/// are forgotten first.
#[derive(Debug)]
pub(crate) struct Window<V> {
    map: HashMap<String, V>,
    order: VecDeque<String>,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
}

impl<V> Window<V> {
    /// A window of at most `max_entries` entries and `max_bytes` bytes (both at least one entry).
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Window {
            map: HashMap::new(),
            order: VecDeque::new(),
            max_entries: max_entries.max(1),
            max_bytes,
            bytes: 0,
        }
    }

    fn cost(key: &str) -> usize {
        key.len() + ENTRY_OVERHEAD
    }

    /// The value remembered for `key`, if it is still in the window.
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.map.get(key)
    }

    /// The value remembered for `key`, to change it.
    pub(crate) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// Whether `key` is in the window.
    #[cfg(test)]
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Remembers `key` with `value`, forgetting the oldest entries to stay within the bounds.
    /// Returns false (and changes nothing) if `key` was already there.
    pub(crate) fn insert(&mut self, key: &str, value: V) -> bool {
        if self.map.contains_key(key) {
            return false;
        }
        let cost = Self::cost(key);
        while !self.order.is_empty()
            && (self.order.len() >= self.max_entries || self.bytes + cost > self.max_bytes)
        {
            if let Some(old) = self.order.pop_front() {
                self.bytes -= Self::cost(&old);
                self.map.remove(&old);
            }
        }
        self.bytes += cost;
        self.order.push_back(key.to_owned());
        self.map.insert(key.to_owned(), value);
        true
    }

    /// How many entries it holds.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// What its entries cost, as counted against the byte bound.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_oldest_entries_go_first() {
        let mut w = Window::new(2, usize::MAX);
        assert!(w.insert("a", 1));
        assert!(!w.insert("a", 9), "a repeat is not inserted");
        assert_eq!(w.get("a"), Some(&1));
        assert!(w.insert("b", 2));
        assert!(w.insert("c", 3));
        assert!(!w.contains("a") && w.contains("b") && w.contains("c"));
    }

    #[test]
    fn the_byte_bound_holds_and_one_entry_always_fits() {
        let mut w = Window::new(1000, 2 * (ENTRY_OVERHEAD + 1));
        w.insert("a", ());
        w.insert("b", ());
        assert_eq!(w.len(), 2);
        w.insert("c", ());
        assert_eq!(w.len(), 2);
        assert!(!w.contains("a"));
        // An entry larger than the whole bound still goes in, alone.
        let big = "x".repeat(10 * ENTRY_OVERHEAD);
        w.insert(&big, ());
        assert_eq!(w.len(), 1);
        assert!(w.contains(&big));
    }

    proptest! {
        /// Against a model: the window holds exactly the most recent distinct keys that fit,
        /// never forgets a key inside its bounds (no false negative), never claims a key it
        /// was not given (no false positive), and stays within both bounds.
        #[test]
        fn behaves_like_the_most_recent_keys_that_fit(
            keys in proptest::collection::vec("[a-e]{1,3}", 0..300),
            max_entries in 1usize..20,
            max_bytes in (ENTRY_OVERHEAD + 3)..(20 * (ENTRY_OVERHEAD + 3)),
        ) {
            let mut w = Window::new(max_entries, max_bytes);
            let mut model: VecDeque<String> = VecDeque::new();
            for k in &keys {
                let fresh = !model.contains(k);
                prop_assert_eq!(w.insert(k, ()), fresh, "insert {}", k);
                if fresh {
                    model.push_back(k.clone());
                    let cost = |m: &VecDeque<String>| m.iter().map(|k| k.len() + ENTRY_OVERHEAD).sum::<usize>();
                    while model.len() > max_entries || (model.len() > 1 && cost(&model) > max_bytes) {
                        model.pop_front();
                    }
                }
                prop_assert!(w.len() <= max_entries);
                prop_assert!(w.len() == 1 || w.bytes() <= max_bytes);
                for m in &model {
                    prop_assert!(w.contains(m), "forgot {} inside the bounds", m);
                }
                prop_assert_eq!(w.len(), model.len());
            }
            // Keys never given are never in it.
            prop_assert!(!w.contains("zz") && !w.contains(""));
        }
    }
}

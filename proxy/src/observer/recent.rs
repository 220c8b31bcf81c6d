//! The ring of recent chats, newest last: what `GET /admin/requests`, the
//! console, the per-provider figures and drift read.
//!
//! A chat whose log line the writer keeps is held as where that line is
//! ([`LineAt`]), and read back when asked for. The others are held whole:
//! the chats of an observer without a store, those whose line was left out
//! of the log, refers to earlier chats' messages or is long (a captured
//! conversation, which scans would parse again and again), and those
//! replayed at start.
//!
//! Holding every chat whole cost about a tenth of Lakehouse's CPU per chat
//! at 16 connections (interleaved A/B against a ring of one: 29.6 against
//! 26.2 µs, 24.0k against 26.8k req/s): each chat freed the one recorded a
//! thousand chats before, whose memory had long left the cache, and the
//! next chat's allocations reused it. A line's bytes are written once
//! anyway, for the log.

use std::collections::VecDeque;

use super::ChatEvent;
use super::writer::LineAt;

/// One chat in the ring.
#[derive(Debug)]
pub(super) enum Entry {
    /// Its line in the writer's kept parts, and its rating given since.
    Line {
        at: LineAt,
        rating: Option<f32>,
    },
    Whole(Box<ChatEvent>),
}

/// The last `capacity` chats, each with a number that stays its own while
/// others come and go.
#[derive(Debug)]
pub(super) struct Ring {
    capacity: usize,
    entries: VecDeque<Entry>,
    /// Chats ever pushed: the newest's number is `pushed - 1`.
    pushed: u64,
}

impl Ring {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: VecDeque::with_capacity(capacity.clamp(1, 4096)),
            pushed: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds the newest chat; answers the one it pushed out, to be freed
    /// outside the lock.
    pub(super) fn push(&mut self, entry: Entry) -> Option<Entry> {
        let evicted = if self.entries.len() >= self.capacity {
            self.entries.pop_front()
        } else {
            None
        };
        self.entries.push_back(entry);
        self.pushed += 1;
        evicted
    }

    /// The number of the oldest chat here.
    fn first_number(&self) -> u64 {
        self.pushed - self.entries.len() as u64
    }

    /// The chats with their numbers, newest first.
    pub(super) fn newest_first(&self) -> impl Iterator<Item = (u64, &Entry)> {
        let first = self.first_number();
        self.entries
            .iter()
            .enumerate()
            .rev()
            .map(move |(i, e)| (first + i as u64, e))
    }

    /// The chat numbered `number`, if it is still here.
    pub(super) fn get_mut(&mut self, number: u64) -> Option<&mut Entry> {
        let index = usize::try_from(number.checked_sub(self.first_number())?).ok()?;
        self.entries.get_mut(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observer::Outcome;
    use crate::observer::tests::event;

    fn latency(entry: &Entry) -> f64 {
        match entry {
            Entry::Whole(e) => e.latency_ms,
            Entry::Line { .. } => f64::NAN,
        }
    }

    #[test]
    fn numbers_stay_with_their_chats_as_older_ones_leave() {
        let mut ring = Ring::new(2);
        for i in 0..3 {
            let evicted = ring.push(Entry::Whole(Box::new(event(
                "kimi",
                Outcome::Ok,
                f64::from(i),
            ))));
            assert_eq!(evicted.map(|e| latency(&e)), (i == 2).then_some(0.0));
        }
        let seen: Vec<(u64, f64)> = ring.newest_first().map(|(n, e)| (n, latency(e))).collect();
        assert_eq!(seen, [(2, 2.0), (1, 1.0)]);
        assert!(ring.get_mut(0).is_none(), "pushed out");
        assert_eq!(ring.get_mut(1).map(|e| latency(e)), Some(1.0));
        assert!(ring.get_mut(3).is_none(), "not yet pushed");
    }
}

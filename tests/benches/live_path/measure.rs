//! What a phase measured: when each stream first read each change, against
//! when the change was sent, as latencies per kind of page and per change
//! to the last board.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::streams::{Arrival, Change, Stream};

/// Latencies, sorted.
pub(crate) struct Latencies(Vec<Duration>);

impl Latencies {
    fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Latencies(samples)
    }

    /// The nearest-rank quantile `q` (zero when there are no samples).
    pub(crate) fn at(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.0.len() as f64) * q).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

pub(crate) struct Outcome {
    pub(crate) customer: Latencies,
    pub(crate) board: Latencies,
    /// Per change, until the last board showed it.
    pub(crate) last_board: Latencies,
    pub(crate) changes: usize,
    pub(crate) expected: usize,
    pub(crate) read: usize,
    pub(crate) missing: usize,
    /// The server's resident memory with the phase's streams open (KiB).
    pub(crate) rss: Option<u64>,
}

/// When each stream first read each change, against when the changes were
/// sent.
pub(crate) struct Seen<'a> {
    sent: &'a HashMap<Change, Instant>,
    first: HashMap<(Stream, Change), Instant>,
}

impl<'a> Seen<'a> {
    pub(crate) fn new(sent: &'a HashMap<Change, Instant>) -> Self {
        Seen {
            sent,
            first: HashMap::new(),
        }
    }

    /// Records an arrival if it is its stream's first read of the change.
    /// Returns 1 when it is and the change is one this phase sent, else 0:
    /// only those count toward what the phase expects.
    pub(crate) fn keep(&mut self, a: Arrival) -> usize {
        let counts = self.sent.contains_key(&a.change);
        if let std::collections::hash_map::Entry::Vacant(first) =
            self.first.entry((a.stream, a.change))
        {
            first.insert(a.at);
            usize::from(counts)
        } else {
            0
        }
    }

    /// The phase's latencies, per kind of page and per change to the last
    /// board, of the changes this phase sent.
    pub(crate) fn outcome(&self, expected: usize, rss: Option<u64>) -> Outcome {
        let mut customer = Vec::new();
        let mut board = Vec::new();
        let mut last_board: HashMap<&Change, Duration> = HashMap::new();
        for ((stream, change), at) in &self.first {
            let Some(from) = self.sent.get(change) else {
                continue;
            };
            let latency = at.saturating_duration_since(*from);
            match stream {
                Stream::Customer(_) => customer.push(latency),
                Stream::Board(_) => {
                    board.push(latency);
                    let last = last_board.entry(change).or_default();
                    *last = (*last).max(latency);
                }
            }
        }
        let read = customer.len() + board.len();
        Outcome {
            customer: Latencies::new(customer),
            board: Latencies::new(board),
            last_board: Latencies::new(last_board.into_values().collect()),
            changes: self.sent.len(),
            expected,
            read,
            missing: expected.saturating_sub(read),
            rss,
        }
    }
}

//! Where a place-order's time goes. Each stage a request waits on is timed:
//! checking its caller (`auth`), looking up its idempotency key, the
//! catalog it is checked against (`menu`: in memory, unless the menu
//! changed), and the append with its pickup number draw and its commit
//! (`append`). The caller sees its own breakdown in a
//! `Server-Timing` header (milliseconds), and `/metrics` has every stage in
//! the histogram `place_order_stage_seconds{stage}`, so a load test shows
//! where the tail is spent.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long checking the request's caller took (set by
/// `http::access::authenticate`, read by the place-order handler).
#[derive(Debug, Clone, Copy)]
pub struct AuthTook(pub Duration);

/// The stages one request waited on, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stages {
    marks: Vec<(&'static str, Duration)>,
}

impl Stages {
    /// Awaits `work` as `stage`.
    pub async fn time<T>(&mut self, stage: &'static str, work: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = work.await;
        self.record(stage, started.elapsed());
        out
    }

    /// Records a stage timed elsewhere.
    pub fn record(&mut self, stage: &'static str, took: Duration) {
        metrics::histogram!("place_order_stage_seconds", "stage" => stage)
            .record(took.as_secs_f64());
        self.marks.push((stage, took));
    }

    /// Appends `later`'s stages (already recorded).
    pub fn extend(&mut self, later: Stages) {
        self.marks.extend(later.marks);
    }

    /// The stages as a `Server-Timing` header value: `auth;dur=0.412, …`.
    pub fn server_timing(&self) -> String {
        self.marks
            .iter()
            .map(|(stage, took)| format!("{stage};dur={:.3}", took.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_read_as_a_server_timing_header_in_milliseconds() {
        let mut stages = Stages::default();
        stages.record("auth", Duration::from_micros(412));
        stages.record("append", Duration::from_millis(3));
        assert_eq!(stages.server_timing(), "auth;dur=0.412, append;dur=3.000");
        assert_eq!(Stages::default().server_timing(), "");
    }
}

//! Where a sync's time goes: named phases with their start and length
//! (seconds from the start of the run), in `sync --json` as `timeline`.
//!
//! Why it exists: sync is measured against a floor (the same blob files
//! PUT in parallel with no planning); the difference is made of phases
//! that are each small (opening bundles, HEADs of the plan, the wait for
//! the last upload, manifests). Measured per run, they say which one to
//! work on instead of guessing.
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// One phase of a run.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    pub name: String,
    /// Seconds from the start of the run.
    pub start: f64,
    pub seconds: f64,
}

/// The phases of one run, recorded as they end (shared by the tasks of a
/// phase, hence the lock).
#[derive(Debug)]
pub struct Timeline {
    t0: Instant,
    phases: Mutex<Vec<Phase>>,
}

impl Timeline {
    pub fn new(t0: Instant) -> Self {
        Timeline {
            t0,
            phases: Mutex::new(Vec::new()),
        }
    }

    /// Record `name` as having run from `from` until now.
    pub fn ended(&self, name: &str, from: Instant) {
        self.span(name, from, Instant::now());
    }

    /// Record `name` as having run from `from` to `to`.
    pub fn span(&self, name: &str, from: Instant, to: Instant) {
        let start = from.saturating_duration_since(self.t0).as_secs_f64();
        let seconds = to.saturating_duration_since(from).as_secs_f64();
        let mut p = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        p.push(Phase {
            name: name.to_string(),
            start: round_ms(start),
            seconds: round_ms(seconds),
        });
    }

    /// The phases so far, by start.
    pub fn phases(&self) -> Vec<Phase> {
        let mut p = self
            .phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        p.sort_by(|a, b| a.start.total_cmp(&b.start));
        p
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phases_come_out_in_order_of_start_with_their_lengths() {
        let t0 = Instant::now();
        let tl = Timeline::new(t0);
        tl.span(
            "b",
            t0 + Duration::from_millis(500),
            t0 + Duration::from_millis(1250),
        );
        tl.span("a", t0, t0 + Duration::from_millis(500));
        let p = tl.phases();
        assert_eq!(p[0].name, "a");
        assert_eq!((p[1].start, p[1].seconds), (0.5, 0.75));
    }
}

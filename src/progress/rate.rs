//! The total's rate and ETA over a moving window (issue 22).
//!
//! A rate averaged from the first byte never forgets an early burst: the
//! first bytes of every upload go into socket buffers at memory speed, so
//! on an 18.8 MiB/s link the old total showed 72 MiB/s falling slowly and
//! an ETA far too short. Here the rate is the bytes sent in the last
//! [`WINDOW`] (never counting the first [`SETTLE`], the burst), and no ETA
//! is shown until [`FIRST_ETA`] after the first byte: an ETA that is
//! unknown says so instead of guessing. The bytes counted are the bytes
//! handed to the connection ("sent"): the registry acknowledges a blob only
//! as a whole, so the display says "sent", not "uploaded".
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back the rate looks.
pub const WINDOW: Duration = Duration::from_secs(5);
/// The start of a transfer (socket buffers filling) is never in the window.
pub const SETTLE: Duration = Duration::from_secs(1);
/// No rate or ETA before this much moving time.
pub const FIRST_ETA: Duration = Duration::from_secs(3);
/// Samples are kept at most this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// (when, bytes done) samples of the last [`WINDOW`] and a little more.
#[derive(Debug, Default)]
pub struct RateWindow {
    first: Option<Instant>,
    samples: VecDeque<(Instant, u64)>,
}

impl RateWindow {
    /// Record that `done` bytes are done at `now`.
    pub fn record(&mut self, now: Instant, done: u64) {
        let first = *self.first.get_or_insert(now);
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.duration_since(*t) < SAMPLE_EVERY)
        {
            // Keep the newest count in the last sample.
            if let Some(last) = self.samples.back_mut() {
                last.1 = done;
            }
            return;
        }
        self.samples.push_back((now, done));
        // Keep one sample at or before the window's start.
        let start = window_start(first, now);
        while self.samples.len() > 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
    }

    /// Bytes per second over the window at `now`, once there is one: the
    /// least-squares slope of the samples in the window (the counts at
    /// single instants are noisy: a body chunk is counted when it leaves
    /// for the connection, the send queues are read a few times a second).
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let first = self.first?;
        if now.duration_since(first) < FIRST_ETA {
            return None;
        }
        let start = window_start(first, now);
        // From the newest sample at or before the start.
        let from = self
            .samples
            .iter()
            .rposition(|(t, _)| *t <= start)
            .unwrap_or(0);
        let pts: Vec<(f64, f64)> = self
            .samples
            .iter()
            .skip(from)
            .map(|(t, d)| (t.duration_since(first).as_secs_f64(), *d as f64))
            .collect();
        if pts.len() < 2 {
            return None;
        }
        let n = pts.len() as f64;
        let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
        let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        if sxx <= 0.0 {
            return None;
        }
        Some((sxy / sxx).max(0.0))
    }

    /// Seconds left for `remaining` bytes at the window's rate.
    pub fn eta(&self, now: Instant, remaining: u64) -> Option<Duration> {
        let rate = self.rate(now)?;
        if remaining == 0 {
            return Some(Duration::ZERO);
        }
        (rate > 0.0).then(|| Duration::from_secs_f64(remaining as f64 / rate))
    }
}

fn window_start(first: Instant, now: Instant) -> Instant {
    let settled = first + SETTLE;
    let recent = now.checked_sub(WINDOW).unwrap_or(first);
    settled.max(recent)
}

/// `12.3 MiB/s, ETA 9s`, or `ETA …` while the rate is not known yet.
pub fn rate_and_eta(window: &RateWindow, now: Instant, remaining: u64) -> String {
    match (window.rate(now), window.eta(now, remaining)) {
        (Some(r), Some(eta)) => {
            format!("{}/s, ETA {}", super::human_bytes(r as u64), eta_text(eta))
        }
        (Some(r), None) => format!("{}/s", super::human_bytes(r as u64)),
        _ => "ETA …".to_string(),
    }
}

/// Whole seconds, rounded (not ceiled: 0.4 s left is "0s"), minutes above 99 s.
pub fn eta_text(eta: Duration) -> String {
    let s = eta.as_secs_f64().round() as u64;
    if s < 100 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst of 30 MiB at once, then 10 MiB/s: the rate is the link's
    /// once the window has moved past the burst, and no ETA before 3 s.
    #[test]
    fn an_early_burst_fades_and_the_eta_follows_the_link() {
        let t0 = Instant::now();
        let mut w = RateWindow::default();
        let mib = 1u64 << 20;
        w.record(t0, 30 * mib);
        let mut done = 30 * mib;
        let mut rates = Vec::new();
        for i in 1..=100u64 {
            let now = t0 + Duration::from_millis(100 * i);
            done += mib; // 10 MiB/s
            w.record(now, done);
            if i < 30 {
                assert!(w.rate(now).is_none(), "no rate before 3 s");
            } else {
                rates.push(w.rate(now).unwrap() / mib as f64);
            }
        }
        for r in &rates {
            assert!((*r - 10.0).abs() < 1.0, "{rates:?}");
        }
        let now = t0 + Duration::from_secs(10);
        let eta = w.eta(now, 50 * mib).unwrap().as_secs_f64();
        assert!((eta - 5.0).abs() < 0.5, "{eta}");
        assert_eq!(eta_text(Duration::from_millis(400)), "0s");
        assert_eq!(eta_text(Duration::from_secs(125)), "2m05s");
    }
}

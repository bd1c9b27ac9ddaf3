//! Progress reporting shared by every verb: byte-level bars with rate and ETA
//! on a terminal (one per active transfer plus a total), plain log lines
//! otherwise (CI logs, pipes), nothing at all with `--json` on stdout.
//!
//! The total counts only bytes that will move: a verb announces what it
//! plans to transfer, and a transfer that turns out unnecessary (the blob
//! appeared in the target meanwhile) takes its bytes back out with
//! [`Transfer::skip`]. Rate and ETA come from the bytes moved in a moving
//! window ([`rate`]), so planning time, skipped blobs and the burst of
//! filling socket buffers do not skew them. Per-transfer bars show bytes
//! only: a single upload's rate is the socket buffer's, not the link's.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub mod rate;
mod unacked;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on stderr.
    Bars,
    /// One line on stderr per finished transfer and a periodic total.
    Lines,
    /// Nothing (for `--json` and tests that read stderr).
    Quiet,
}

/// The progress display of one verb run. Cheap to clone.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

struct Inner {
    mode: Mode,
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
    total_bytes: AtomicU64,
    done_bytes: AtomicU64,
    /// When the first byte moved (rate and ETA count from there).
    first_byte: std::sync::OnceLock<Instant>,
    last_line: Mutex<Instant>,
    /// Moving-window rate of the total, and when the bar's text was set.
    window: Mutex<(rate::RateWindow, Option<Instant>)>,
    /// What the counted bytes are (`sent` for uploads), shown after them.
    word: std::sync::OnceLock<&'static str>,
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise; `quiet` forces none.
    pub fn auto(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        };
        Self::new(mode)
    }

    pub fn new(mode: Mode) -> Self {
        let (multi, total) = if mode == Mode::Bars {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8));
            let total = multi.add(ProgressBar::new(0));
            total.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8.bold} [{bar:30}] {bytes}/{total_bytes} {msg}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            total.set_prefix("total");
            (Some(multi), Some(total))
        } else {
            (None, None)
        };
        Progress {
            inner: Arc::new(Inner {
                mode,
                multi,
                total,
                total_bytes: AtomicU64::new(0),
                done_bytes: AtomicU64::new(0),
                first_byte: std::sync::OnceLock::new(),
                last_line: Mutex::new(Instant::now()),
                window: Mutex::new((rate::RateWindow::default(), None)),
                word: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Uploads: the total counts bytes the registry acknowledged (sent,
    /// less what waits unacknowledged in this process's socket buffers;
    /// see [`unacked`]), or says "sent" where that cannot be known. A
    /// ticker keeps rate and ETA current while the last bytes drain.
    pub fn counting_acknowledged(&self) {
        if self.inner.mode == Mode::Quiet {
            return; // nothing shown (--json): nothing to ask
        }
        // The send queues are asked only while something is shown.
        let word = if unacked::available() {
            "acknowledged"
        } else {
            "sent"
        };
        if self.inner.word.set(word).is_ok() && self.inner.mode != Mode::Quiet {
            let weak = Arc::downgrade(&self.inner);
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(250));
                let Some(inner) = weak.upgrade() else { break };
                if inner.total.as_ref().is_some_and(|t| t.is_finished()) {
                    break;
                }
                Progress { inner }.advance(0);
            });
        }
    }

    fn acknowledging(&self) -> bool {
        self.inner.word.get() == Some(&"acknowledged")
    }

    /// `, ` + rate and ETA of the total now (moving window).
    fn rate_text(&self, now: Instant, done: u64) -> String {
        let total = self.inner.total_bytes.load(Ordering::Relaxed);
        let window = self.inner.window.lock().unwrap();
        let word = self.inner.word.get().copied().unwrap_or("");
        let sep = if word.is_empty() { "" } else { " " };
        format!(
            "{sep}{word}, {}",
            rate::rate_and_eta(&window.0, now, total.saturating_sub(done))
        )
    }

    /// Announce `bytes` more work in the total.
    pub fn add_total(&self, bytes: u64) {
        let t = self.inner.total_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(total) = &self.inner.total {
            total.set_length(t);
        }
    }

    /// A bar for one transfer of `size` bytes (shown only while active).
    pub fn transfer(&self, label: &str, size: u64) -> Transfer {
        let bar = self.inner.multi.as_ref().map(|m| {
            let b = m.insert_before(self.inner.total.as_ref().unwrap(), ProgressBar::new(size));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} {msg:40!} [{bar:20}] {bytes}/{total_bytes}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            b.set_prefix("upload");
            b.set_message(label.to_string());
            b
        });
        Transfer {
            progress: self.clone(),
            bar,
            label: label.to_string(),
            size,
            done: 0,
        }
    }

    /// A message line (above the bars on a terminal, on stderr otherwise).
    pub fn println(&self, msg: impl AsRef<str>) {
        match self.inner.mode {
            Mode::Bars => {
                if let Some(m) = &self.inner.multi {
                    let _ = m.println(msg.as_ref());
                }
            }
            Mode::Lines => eprintln!("{}", msg.as_ref()),
            Mode::Quiet => {}
        }
    }

    /// Take `bytes` out of the total: announced, but they will not move.
    fn remove_total(&self, bytes: u64) {
        let t = self
            .inner
            .total_bytes
            .fetch_sub(
                bytes.min(self.inner.total_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            )
            .saturating_sub(bytes);
        if let Some(total) = &self.inner.total {
            total.set_length(t);
        }
    }

    /// One line about a blob that moves no bytes (`mounted ... from R`,
    /// `skipped ...`); uploads get theirs from [`Transfer::finish`].
    pub fn blob_line(&self, what: &str, label: &str, size: u64, from: Option<&str>) {
        if self.inner.mode == Mode::Lines {
            let from = from.map(|f| format!(" from {f}")).unwrap_or_default();
            eprintln!("{what} {label} ({}){from}", human_bytes(size));
        }
    }

    fn advance(&self, n: u64) {
        if n == 0 && self.inner.first_byte.get().is_none() {
            return; // a tick before anything moved
        }
        let first = *self.inner.first_byte.get_or_init(|| {
            // The bar's rate and ETA start with the first moved byte, not
            // with the planning before it.
            if let Some(total) = &self.inner.total {
                total.reset_elapsed();
            }
            Instant::now()
        });
        let _ = first;
        let sent = self.inner.done_bytes.fetch_add(n, Ordering::Relaxed) + n;
        if self.inner.mode == Mode::Quiet {
            return; // nothing shown: no rate, no reads of /proc
        }
        let now = Instant::now();
        // The bar's text is set a few times a second, not per chunk; plain
        // lines (one every 5 s) need a sample a second.
        let every = match self.inner.mode {
            Mode::Bars => Duration::from_millis(200),
            _ => Duration::from_secs(1),
        };
        let refresh = {
            let mut w = self.inner.window.lock().unwrap();
            let due = w.1.is_none_or(|t| now.duration_since(t) >= every);
            if due {
                w.1 = Some(now);
            }
            due
        };
        if !refresh {
            return;
        }
        let done = if self.acknowledging() {
            sent.saturating_sub(unacked::unacked_bytes().unwrap_or(0))
        } else {
            sent
        };
        self.inner.window.lock().unwrap().0.record(now, done);
        if let Some(total) = &self.inner.total {
            total.set_position(done);
            total.set_message(self.rate_text(now, done));
        } else if self.inner.mode == Mode::Lines {
            let total = self.inner.total_bytes.load(Ordering::Relaxed);
            if n == 0 && done >= total {
                return; // a tick after everything arrived: nothing to say
            }
            let mut last = self.inner.last_line.lock().unwrap();
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                let total = self.inner.total_bytes.load(Ordering::Relaxed);
                let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
                eprintln!(
                    "progress: {} of {} ({pct}%){}",
                    human_bytes(done),
                    human_bytes(total),
                    self.rate_text(now, done)
                );
            }
        }
    }

    /// Bytes counted as done so far.
    pub fn done_bytes(&self) -> u64 {
        self.inner.done_bytes.load(Ordering::Relaxed)
    }

    pub fn finish(&self) {
        if let Some(total) = &self.inner.total {
            total.finish_and_clear();
        }
    }
}

/// One active transfer. Dropping it removes its bar.
pub struct Transfer {
    progress: Progress,
    bar: Option<ProgressBar>,
    label: String,
    size: u64,
    done: u64,
}

impl Transfer {
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        self.progress.advance(n);
    }

    /// This transfer's bytes will not move after all (the blob was found
    /// in place, or mounted): take them out of the total.
    pub fn skip(&mut self, n: u64) {
        self.progress.remove_total(n);
    }

    /// No progress for a whole stall timeout: the bar says "stalled"
    /// until the retry resets it (the registry client also logs a warning,
    /// which is what line mode shows).
    pub fn stalled(&mut self) {
        if let Some(b) = &self.bar {
            b.set_prefix("stalled");
        }
    }

    /// A retry starts the transfer over: take back what was counted.
    pub fn reset(&mut self) {
        if let Some(b) = &self.bar {
            b.set_position(0);
            b.set_prefix("push");
        }
        self.progress
            .inner
            .done_bytes
            .fetch_sub(self.done.min(self.progress.done_bytes()), Ordering::Relaxed);
        self.done = 0;
    }

    pub fn finish(self, outcome: &str) {
        if self.progress.mode() == Mode::Lines {
            eprintln!("{outcome} {} ({})", self.label, human_bytes(self.size));
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            if let Some(m) = &self.progress.inner.multi {
                m.remove(&b);
            }
        }
    }
}

/// `1.2 GiB of 4.0 GiB (30%), 110.0 MiB/s, ETA 25s`: from moved bytes only.
pub fn rate_line(done: u64, total: u64, moving_for: Duration) -> String {
    let secs = moving_for.as_secs_f64().max(0.001);
    let rate = done as f64 / secs;
    let pct = done.saturating_mul(100).checked_div(total).unwrap_or(100);
    let eta = if rate > 0.0 && total > done {
        format!(", ETA {}s", ((total - done) as f64 / rate).ceil() as u64)
    } else {
        String::new()
    };
    format!(
        "{} of {} ({pct}%), {}/s{eta}",
        human_bytes(done),
        human_bytes(total),
        human_bytes(rate as u64)
    )
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_bytes_leave_the_total_and_never_count_as_moved() {
        let p = Progress::new(Mode::Quiet);
        p.add_total(300);
        let mut a = p.transfer("a", 100);
        a.inc(100);
        let mut b = p.transfer("b", 200);
        b.skip(200);
        assert_eq!(p.done_bytes(), 100);
        assert_eq!(p.inner.total_bytes.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn rate_and_eta_come_from_moved_bytes() {
        let l = rate_line(50 << 20, 150 << 20, Duration::from_secs(5));
        assert_eq!(l, "50.0 MiB of 150.0 MiB (33%), 10.0 MiB/s, ETA 10s");
    }
}

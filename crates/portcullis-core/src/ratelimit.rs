//! Rate limits for the log lines a client can cause.
//!
//! Every refusal, failed handshake or refused PROXY header is caused by whoever connects; logging each one
//! at warn level lets a public caller fill the disk and spend the CPU on formatting. A [`LogLimit`] lets
//! through at most a fixed number of lines of one kind per window (one second by default); the others are
//! counted, and the first line of a later window is preceded by one "N more … suppressed" line. The
//! suppressed events can still be seen one by one at debug level: call sites log them with `debug!`.
//!
//! One limit per kind of line, held in a `static`; the kinds shared by several crates are here
//! ([`REFUSALS`], [`SHADOW_REFUSALS`], [`TLS_HANDSHAKES`], [`PROXY_HEADERS`], [`CONNECTIONS`]).
//!
//! ```
//! use portcullis_core::ratelimit::REFUSALS;
//! if REFUSALS.admit() {
//!     tracing::warn!("portcullis refused: ...");
//! } else {
//!     tracing::debug!("portcullis refused: ...");
//! }
//! ```

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::Level;

/// Lines per window let through by the shared limits.
pub const DEFAULT_LINES_PER_WINDOW: u64 = 20;

/// The window of the shared limits.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(1);

/// Refusals (`Denial::log`), warn level.
pub static REFUSALS: LogLimit = LogLimit::new("refusal", Level::WARN);

/// Shadow-mode refusals (nothing was refused), info level.
pub static SHADOW_REFUSALS: LogLimit = LogLimit::new("shadow-mode refusal", Level::INFO);

/// Failed TLS handshakes: refused client chains, unknown server names, handshake errors.
pub static TLS_HANDSHAKES: LogLimit = LogLimit::new("TLS handshake", Level::WARN);

/// Refused or failed PROXY protocol headers.
pub static PROXY_HEADERS: LogLimit = LogLimit::new("PROXY header", Level::WARN);

/// Connection-level warnings: failed accepts, connections closed on an error.
pub static CONNECTIONS: LogLimit = LogLimit::new("connection", Level::WARN);

/// A per-window limit on one kind of log line. Plain atomics, no lock: it may be shared by every thread.
///
/// Counting is approximate at a window's edge (a line racing the window change may count in either
/// window); it never lets through more than `lines` plus the number of threads racing at that edge.
#[derive(Debug)]
pub struct LogLimit {
    kind: &'static str,
    level: Level,
    lines: u64,
    window_ms: u64,
    /// The index of the current window (milliseconds since the first use of any limit, over `window_ms`).
    window: AtomicU64,
    /// Events seen in the current window.
    seen: AtomicU64,
    /// Events refused since the last summary line.
    suppressed: AtomicU64,
}

/// What [`LogLimit::admit_at`] decided for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Whether the event's line is written at its level.
    pub log: bool,
    /// Events suppressed before this one that no summary line has reported yet (non-zero at most once per
    /// window: to the first event let through in a new window).
    pub suppressed: u64,
}

impl LogLimit {
    /// A limit of [`DEFAULT_LINES_PER_WINDOW`] per [`DEFAULT_WINDOW`] for lines of `kind` (a short noun,
    /// used in the summary line) written at `level` (the summary line's level too).
    pub const fn new(kind: &'static str, level: Level) -> LogLimit {
        LogLimit::with_rate(kind, level, DEFAULT_LINES_PER_WINDOW, DEFAULT_WINDOW)
    }

    /// A limit of `lines` per `window` (a window under a millisecond counts as one millisecond).
    pub const fn with_rate(kind: &'static str, level: Level, lines: u64, window: Duration) -> LogLimit {
        let ms = window.as_millis();
        let window_ms = if ms == 0 {
            1
        } else if ms > u64::MAX as u128 {
            u64::MAX
        } else {
            ms as u64
        };
        LogLimit {
            kind,
            level,
            lines,
            window_ms,
            window: AtomicU64::new(0),
            seen: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// The kind of line this limit counts.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Counts one event now: `true` when its line may be written at its level, `false` when it should go
    /// to debug level only. When lines were suppressed since the last summary, writes the summary line
    /// ("N more … lines suppressed") first.
    pub fn admit(&self) -> bool {
        let admit = self.admit_at(since_epoch());
        if admit.suppressed > 0 {
            self.summary(admit.suppressed);
        }
        admit.log
    }

    /// Counts one event at `now` (a monotonic time since any fixed origin, the same for every call on
    /// this limit). The decision alone, nothing is logged: [`admit`](Self::admit) is this with the clock
    /// and the summary line.
    pub fn admit_at(&self, now: Duration) -> Admit {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let window = now_ms / self.window_ms;
        let current = self.window.load(Ordering::Acquire);
        // A later window: the one caller that moves the window on starts its count and collects the
        // suppressed events. An earlier `now` (a caller that read the clock before another) counts in the
        // current window.
        if window > current
            && self.window.compare_exchange(current, window, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            self.seen.store(1, Ordering::Release);
            let suppressed = self.suppressed.swap(0, Ordering::AcqRel);
            return Admit { log: self.lines > 0, suppressed };
        }
        let seen = self.seen.fetch_add(1, Ordering::AcqRel);
        if seen < self.lines {
            Admit { log: true, suppressed: 0 }
        } else {
            self.suppressed.fetch_add(1, Ordering::AcqRel);
            Admit { log: false, suppressed: 0 }
        }
    }

    fn summary(&self, suppressed: u64) {
        let (kind, lines, window_ms) = (self.kind, self.lines, self.window_ms);
        match self.level {
            Level::ERROR => {
                tracing::error!(
                    kind,
                    suppressed,
                    lines,
                    window_ms,
                    "{suppressed} more {kind} lines suppressed"
                )
            }
            Level::WARN => {
                tracing::warn!(
                    kind,
                    suppressed,
                    lines,
                    window_ms,
                    "{suppressed} more {kind} lines suppressed"
                )
            }
            Level::INFO => {
                tracing::info!(
                    kind,
                    suppressed,
                    lines,
                    window_ms,
                    "{suppressed} more {kind} lines suppressed"
                )
            }
            _ => tracing::debug!(
                kind,
                suppressed,
                lines,
                window_ms,
                "{suppressed} more {kind} lines suppressed"
            ),
        }
    }
}

/// Time since the first use of any limit in this process (one origin for all of them).
fn since_epoch() -> Duration {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn limit(lines: u64) -> LogLimit {
        LogLimit::with_rate("test", Level::WARN, lines, Duration::from_secs(1))
    }

    #[test]
    fn lets_through_the_budget_then_suppresses_until_the_next_window() {
        let l = limit(3);
        let first: Vec<Admit> = (0..10).map(|i| l.admit_at(ms(i * 10))).collect();
        assert_eq!(first.iter().filter(|a| a.log).count(), 3);
        assert!(first[..3].iter().all(|a| a.log) && first[3..].iter().all(|a| !a.log));
        assert!(first.iter().all(|a| a.suppressed == 0), "no summary inside the window");
        // The first event of the next window is let through and carries the 7 suppressed ones, once.
        assert_eq!(l.admit_at(ms(1000)), Admit { log: true, suppressed: 7 });
        assert_eq!(l.admit_at(ms(1001)), Admit { log: true, suppressed: 0 });
        assert_eq!(l.admit_at(ms(1002)), Admit { log: true, suppressed: 0 });
        assert_eq!(l.admit_at(ms(1003)), Admit { log: false, suppressed: 0 });
        // A quiet gap of several windows: the count carries over to whenever the next event comes.
        assert_eq!(l.admit_at(ms(5500)), Admit { log: true, suppressed: 1 });
    }

    #[test]
    fn a_flood_is_bounded_per_window() {
        let l = limit(20);
        let mut logged = 0;
        let mut reported = 0;
        // 100,000 events over 10 s: at most 20 lines and one summary per window.
        for i in 0..100_000u64 {
            let a = l.admit_at(Duration::from_micros(i * 100));
            logged += u64::from(a.log);
            reported += a.suppressed;
        }
        assert_eq!(logged, 200);
        // Everything but the last window's suppressed events has been reported.
        assert_eq!(reported, 100_000 - 200 - (10_000 - 20));
    }

    #[test]
    fn an_earlier_clock_reading_counts_in_the_current_window() {
        let l = limit(1);
        assert!(l.admit_at(ms(2000)).log);
        let late = l.admit_at(ms(1999));
        assert_eq!(late, Admit { log: false, suppressed: 0 });
        assert_eq!(l.admit_at(ms(3000)), Admit { log: true, suppressed: 1 });
    }

    #[test]
    fn zero_lines_suppresses_everything_and_still_counts() {
        let l = limit(0);
        assert!(!l.admit_at(ms(0)).log);
        assert!(!l.admit_at(ms(1)).log);
        assert_eq!(l.admit_at(ms(1000)), Admit { log: false, suppressed: 2 });
    }

    #[test]
    fn sub_millisecond_and_huge_windows_are_usable() {
        let tiny = LogLimit::with_rate("t", Level::WARN, 1, Duration::from_nanos(1));
        assert!(tiny.admit_at(ms(0)).log && !tiny.admit_at(ms(0)).log && tiny.admit_at(ms(1)).log);
        let huge = LogLimit::with_rate("t", Level::WARN, 1, Duration::MAX);
        assert!(huge.admit_at(Duration::MAX).log);
        assert!(!huge.admit_at(Duration::MAX).log);
    }

    #[test]
    fn threads_share_one_budget() {
        let l = limit(50);
        let logged: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..10_000).filter(|_| l.admit_at(ms(10)).log).count() as u64))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(logged, 50);
        assert_eq!(l.admit_at(ms(1000)).suppressed, 40_000 - 50);
    }

    /// The summary line is written at the limit's level and reports every suppressed event.
    #[test]
    fn admit_writes_one_summary_line_for_the_suppressed_events() {
        let (captured, _guard) = portcullis_test_support::logs::capture(Level::INFO);
        let l = LogLimit::with_rate("probe", Level::WARN, 2, Duration::from_millis(200));
        let logged = (0..10).filter(|_| l.admit()).count();
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.admit(), "the first event of a later window is let through");
        let log = captured.text();
        // Normally one window: 2 let through, 8 reported. A window edge during the loop moves both figures.
        assert!((2..=4).contains(&logged), "{logged}");
        let reported: u64 = log
            .lines()
            .map(|line| {
                assert!(line.contains("WARN") && line.contains("more probe lines suppressed"), "{line}");
                let n = line.split(" more probe").next().unwrap().rsplit(' ').next().unwrap();
                n.parse::<u64>().unwrap()
            })
            .sum();
        assert_eq!(reported, 10 - logged as u64, "{log}");
    }

    #[test]
    fn the_clock_driven_admit_uses_the_shared_limits() {
        // `admit` reads the process clock; a fresh limit lets its first line through.
        let l = LogLimit::new("fresh", Level::INFO);
        assert!(l.admit());
        assert_eq!(l.kind(), "fresh");
    }
}

//! Where the hub reads the time of day.
//!
//! Whatever depends on the calendar (the demo city's "today", an endpoint's `today`
//! default) reads a [`Clock`], so that tests can run the hub at any hour they choose instead
//! of at whatever hour they happen to run.

use chrono::{DateTime, Duration, Utc};

/// The system clock, or the system clock moved to start at a chosen instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    /// Added to the system time.
    shift: Duration,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `start` now and runs at the system clock's pace from there.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        Self {
            shift: start - Utc::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.shift
    }

    /// The time in microseconds since the Unix epoch.
    pub fn now_micros(&self) -> i64 {
        self.now().timestamp_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_started_at_an_instant_reads_it_and_runs_on() {
        let start = DateTime::parse_from_rfc3339("2026-11-27T17:58:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let clock = Clock::starting_at(start);
        let read = clock.now();
        assert!(
            read >= start && read - start < Duration::seconds(5),
            "{read}"
        );
        assert!(Clock::system().now() - Utc::now() < Duration::seconds(1));
    }
}

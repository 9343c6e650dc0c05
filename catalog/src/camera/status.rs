//! The live status of a channel: a small state machine over keepalives and catalog NOTIFY
//! events, written against an explicit clock so that tests control time.
//!
//! What is stored is the evidence (when the channel or its device was last heard of, the
//! last NOTIFY state) and the status last written to the history. The status itself is
//! always computed from the evidence at the moment it is read, so an answer is right even
//! if the sweeper that appends "went offline" transitions to the history has fallen behind;
//! every write first catches the history up to its own time.
//!
//! Times are Unix milliseconds.

use serde::{Deserialize, Serialize};

/// What answers say of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Offline,
    /// Registered, never heard of.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Unknown => "unknown",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "online" => Some(Status::Online),
            "offline" => Some(Status::Offline),
            "unknown" => Some(Status::Unknown),
            _ => None,
        }
    }
}

/// The last status-bearing NOTIFY a channel sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notified {
    On,
    Off,
    /// Video lost.
    Vlost,
    Defect,
}

impl Notified {
    pub fn as_str(self) -> &'static str {
        match self {
            Notified::On => "ON",
            Notified::Off => "OFF",
            Notified::Vlost => "VLOST",
            Notified::Defect => "DEFECT",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ON" => Some(Notified::On),
            "OFF" => Some(Notified::Off),
            "VLOST" => Some(Notified::Vlost),
            "DEFECT" => Some(Notified::Defect),
            _ => None,
        }
    }

    /// OFF, VLOST and DEFECT hold a channel offline until it says ON, whatever its
    /// device's keepalives say (the device lives, this channel does not).
    fn holds_offline(self) -> bool {
        !matches!(self, Notified::On)
    }
}

/// The catalog NOTIFY events GB/T 28181 defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    On,
    Off,
    Vlost,
    Defect,
    Add,
    Del,
    Update,
}

impl Event {
    pub const NAMES: &'static str = "ON, OFF, VLOST, DEFECT, ADD, DEL or UPDATE";

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ON" => Some(Event::On),
            "OFF" => Some(Event::Off),
            "VLOST" => Some(Event::Vlost),
            "DEFECT" => Some(Event::Defect),
            "ADD" => Some(Event::Add),
            "DEL" => Some(Event::Del),
            "UPDATE" => Some(Event::Update),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Event::On => "ON",
            Event::Off => "OFF",
            Event::Vlost => "VLOST",
            Event::Defect => "DEFECT",
            Event::Add => "ADD",
            Event::Del => "DEL",
            Event::Update => "UPDATE",
        }
    }

    /// The NOTIFY state the event sets, for the status-bearing ones.
    pub fn notified(self) -> Option<Notified> {
        match self {
            Event::On => Some(Notified::On),
            Event::Off => Some(Notified::Off),
            Event::Vlost => Some(Notified::Vlost),
            Event::Defect => Some(Notified::Defect),
            Event::Add | Event::Del | Event::Update => None,
        }
    }
}

/// Keepalive timing: offline once `interval × missed` has passed without a sign of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    pub interval_ms: i64,
    pub missed: i64,
}

impl Liveness {
    pub fn timeout_ms(self) -> i64 {
        self.interval_ms * self.missed
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            interval_ms: 60_000,
            missed: 3,
        }
    }
}

/// The stored evidence of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LiveState {
    pub notified: Option<Notified>,
    pub notified_at: Option<i64>,
    /// The latest keepalive (of the channel or its device) or ON.
    pub last_seen_at: Option<i64>,
    /// The status last appended to the history, and since when.
    pub recorded: Option<Status>,
    pub recorded_since: Option<i64>,
}

/// One line of the status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub at: i64,
    pub from: Status,
    pub to: Status,
    /// `keepalive`, `keepalive_timeout` or the NOTIFY event's name.
    pub cause: &'static str,
}

/// A change of evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Keepalive,
    Notify(Notified),
    /// The channel was deleted (DEL): it leaves the online count.
    Deleted,
}

impl LiveState {
    fn recorded(&self) -> Status {
        self.recorded.unwrap_or(Status::Unknown)
    }

    /// The status at `now` from the evidence alone.
    pub fn status_at(&self, now: i64, liveness: Liveness) -> Status {
        if self.notified.is_some_and(Notified::holds_offline) {
            return Status::Offline;
        }
        match self.last_seen_at {
            None => Status::Unknown,
            Some(seen) if now < seen + liveness.timeout_ms() => Status::Online,
            Some(_) => Status::Offline,
        }
    }

    /// The status at `now` and since when it holds.
    pub fn status_and_since(&self, now: i64, liveness: Liveness) -> (Status, Option<i64>) {
        let status = self.status_at(now, liveness);
        if status == self.recorded() {
            (status, self.recorded_since)
        } else {
            // Only a timeout can make the evidence disagree with the history (every other
            // change records its transition as it is applied); it happened at a known time.
            (status, self.timeout_at(liveness))
        }
    }

    fn timeout_at(&self, liveness: Liveness) -> Option<i64> {
        self.last_seen_at.map(|seen| seen + liveness.timeout_ms())
    }

    /// Appends the timeout transition the history misses at `now`, if any.
    pub fn catch_up(&mut self, now: i64, liveness: Liveness) -> Option<Transition> {
        if self.recorded() != Status::Online || self.status_at(now, liveness) == Status::Online {
            return None;
        }
        let at = self
            .timeout_at(liveness)
            .filter(|_| !self.notified.is_some_and(Notified::holds_offline))?;
        // A keepalive-timed-out channel: the transition happened at the timeout, not now.
        let at = at.max(self.recorded_since.unwrap_or(at));
        self.recorded = Some(Status::Offline);
        self.recorded_since = Some(at);
        Some(Transition {
            at,
            from: Status::Online,
            to: Status::Offline,
            cause: "keepalive_timeout",
        })
    }

    /// Applies one signal received at `at`, returning the transitions to append (the
    /// timeout that preceded it, if the history missed one, then the signal's own).
    pub fn apply(&mut self, signal: Signal, at: i64, liveness: Liveness) -> Vec<Transition> {
        let mut transitions: Vec<Transition> = self.catch_up(at, liveness).into_iter().collect();
        let cause = match signal {
            Signal::Keepalive => {
                self.last_seen_at = Some(self.last_seen_at.map_or(at, |seen| seen.max(at)));
                "keepalive"
            }
            Signal::Notify(notified) => {
                // An older NOTIFY than the one already applied arrived late: it changes nothing.
                if self.notified_at.is_some_and(|last| last > at) {
                    return transitions;
                }
                self.notified = Some(notified);
                self.notified_at = Some(at);
                if notified == Notified::On {
                    self.last_seen_at = Some(self.last_seen_at.map_or(at, |seen| seen.max(at)));
                }
                notified.as_str()
            }
            Signal::Deleted => {
                let from = self.recorded();
                let at = at.max(self.recorded_since.unwrap_or(at));
                if from != Status::Offline {
                    transitions.push(Transition {
                        at,
                        from,
                        to: Status::Offline,
                        cause: "DEL",
                    });
                }
                *self = LiveState {
                    recorded: Some(Status::Offline),
                    recorded_since: Some(at),
                    ..LiveState::default()
                };
                return transitions;
            }
        };
        let to = self.status_at(at, liveness);
        let from = self.recorded();
        if to != from {
            // History stays in order: a late signal is recorded when the history has got to.
            let at = at.max(self.recorded_since.unwrap_or(at));
            self.recorded = Some(to);
            self.recorded_since = Some(at);
            transitions.push(Transition {
                at,
                from,
                to,
                cause,
            });
        }
        transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const LIVENESS: Liveness = Liveness {
        interval_ms: MINUTE,
        missed: 3,
    };

    fn causes(transitions: &[Transition]) -> Vec<(i64, Status, &'static str)> {
        transitions.iter().map(|t| (t.at, t.to, t.cause)).collect()
    }

    #[test]
    fn keepalives_bring_a_channel_online_and_three_missed_take_it_offline() {
        let mut state = LiveState::default();
        assert_eq!(state.status_at(0, LIVENESS), Status::Unknown);
        let t0 = 1_000_000;
        assert_eq!(
            causes(&state.apply(Signal::Keepalive, t0, LIVENESS)),
            vec![(t0, Status::Online, "keepalive")]
        );
        // Two minutes fifty-nine later: still online, no transition for a keepalive.
        assert!(
            state
                .apply(Signal::Keepalive, t0 + MINUTE, LIVENESS)
                .is_empty()
        );
        let last = t0 + MINUTE;
        assert_eq!(
            state.status_at(last + 3 * MINUTE - 1, LIVENESS),
            Status::Online
        );
        // At exactly three intervals after the last keepalive it is offline, and reading
        // says so even though nothing has been written since.
        assert_eq!(
            state.status_at(last + 3 * MINUTE, LIVENESS),
            Status::Offline
        );
        assert_eq!(
            state.status_and_since(last + 10 * MINUTE, LIVENESS),
            (Status::Offline, Some(last + 3 * MINUTE))
        );
        // A keepalive an hour later records the missed timeout at its true time, then online.
        let later = last + 60 * MINUTE;
        assert_eq!(
            causes(&state.apply(Signal::Keepalive, later, LIVENESS)),
            vec![
                (last + 3 * MINUTE, Status::Offline, "keepalive_timeout"),
                (later, Status::Online, "keepalive")
            ]
        );
    }

    #[test]
    fn the_sweeper_catches_up_once_and_at_the_timeout() {
        let mut state = LiveState::default();
        state.apply(Signal::Keepalive, 0, LIVENESS);
        assert_eq!(state.catch_up(2 * MINUTE, LIVENESS), None);
        let swept = state.catch_up(50 * MINUTE, LIVENESS).expect("timed out");
        assert_eq!((swept.at, swept.to), (3 * MINUTE, Status::Offline));
        assert_eq!(state.catch_up(60 * MINUTE, LIVENESS), None, "only once");
    }

    #[test]
    fn notify_off_holds_a_channel_offline_until_on() {
        let mut state = LiveState::default();
        state.apply(Signal::Keepalive, 0, LIVENESS);
        assert_eq!(
            causes(&state.apply(Signal::Notify(Notified::Vlost), MINUTE, LIVENESS)),
            vec![(MINUTE, Status::Offline, "VLOST")]
        );
        // The device keeps sending keepalives; the channel stays offline.
        assert!(
            state
                .apply(Signal::Keepalive, 2 * MINUTE, LIVENESS)
                .is_empty()
        );
        assert_eq!(state.status_at(2 * MINUTE, LIVENESS), Status::Offline);
        // No timeout transition is invented for a channel already offline by NOTIFY.
        assert_eq!(state.catch_up(30 * MINUTE, LIVENESS), None);
        // A late OFF from before the VLOST changes nothing.
        assert!(
            state
                .apply(Signal::Notify(Notified::Off), MINUTE / 2, LIVENESS)
                .is_empty()
        );
        assert_eq!(
            causes(&state.apply(Signal::Notify(Notified::On), 31 * MINUTE, LIVENESS)),
            vec![(31 * MINUTE, Status::Online, "ON")]
        );
    }

    #[test]
    fn deletion_leaves_the_channel_offline_and_forgets_its_evidence() {
        let mut state = LiveState::default();
        state.apply(Signal::Keepalive, 0, LIVENESS);
        assert_eq!(
            causes(&state.apply(Signal::Deleted, MINUTE, LIVENESS)),
            vec![(MINUTE, Status::Offline, "DEL")]
        );
        assert_eq!(state.status_at(MINUTE, LIVENESS), Status::Unknown);
        assert!(
            state
                .apply(Signal::Deleted, 2 * MINUTE, LIVENESS)
                .is_empty()
        );
    }

    #[test]
    fn late_signals_keep_the_history_in_order() {
        let mut state = LiveState::default();
        state.apply(Signal::Notify(Notified::Off), 10 * MINUTE, LIVENESS);
        // ON sent at minute 12 but a keepalive of minute 5 arrives first: nothing, OFF holds.
        assert!(
            state
                .apply(Signal::Keepalive, 5 * MINUTE, LIVENESS)
                .is_empty()
        );
        let on = state.apply(Signal::Notify(Notified::On), 12 * MINUTE, LIVENESS);
        assert_eq!(causes(&on), vec![(12 * MINUTE, Status::Online, "ON")]);
    }

    /// Whatever signals arrive in whatever order, the history alternates (each transition
    /// starts where the previous ended), never goes back in time, and agrees with the
    /// status read from the evidence after catching up.
    #[test]
    fn random_signal_sequences_keep_a_consistent_history() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(28181);
        for _ in 0..2_000 {
            let mut state = LiveState::default();
            let mut history: Vec<Transition> = Vec::new();
            let mut clock = 0i64;
            for _ in 0..rng.random_range(1..40) {
                clock += rng.random_range(0..5 * MINUTE);
                // Signals may be late by up to two minutes.
                let at = clock - rng.random_range(0..2 * MINUTE);
                let signal = match rng.random_range(0..7) {
                    0..=2 => Signal::Keepalive,
                    3 => Signal::Notify(Notified::On),
                    4 => Signal::Notify(Notified::Off),
                    5 => Signal::Notify(Notified::Vlost),
                    _ => Signal::Deleted,
                };
                history.extend(state.apply(signal, at, LIVENESS));
                if rng.random_bool(0.2) {
                    history.extend(state.catch_up(clock, LIVENESS));
                }
            }
            history.extend(state.catch_up(clock, LIVENESS));
            let mut previous = Status::Unknown;
            let mut previous_at = i64::MIN;
            for transition in &history {
                assert_eq!(transition.from, previous, "{history:?}");
                assert_ne!(transition.from, transition.to, "{history:?}");
                assert!(transition.at >= previous_at, "{history:?}");
                previous = transition.to;
                previous_at = transition.at;
            }
            let (status, _) = state.status_and_since(clock, LIVENESS);
            if status != Status::Unknown || previous != Status::Offline {
                assert_eq!(status, previous, "{history:?} {state:?}");
            }
        }
    }
}

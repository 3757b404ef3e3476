//! Live counts of a run, readable from any thread while it goes on.

use std::sync::{Arc, Mutex, PoisonError};

/// Counts for one state name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// The state name (see [`Machine::state_name`](crate::Machine::state_name)).
    pub state: &'static str,
    /// Units in this state waiting for a worker (or for the state's limits).
    pub ready: usize,
    /// Units whose transition out of this state is running.
    pub in_flight: usize,
    /// Units in this state waiting for a retry.
    pub waiting: usize,
    /// The most transitions out of this state that ran at the same time.
    pub max_in_flight: usize,
    /// Successful transitions out of this state.
    pub transitions: u64,
    /// Failed attempts of transitions out of this state.
    pub failures: u64,
}

/// A picture of a run at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per state name, in the order the names were first seen.
    pub states: Vec<StateCounts>,
    /// Units taken from the input so far.
    pub admitted: u64,
    /// Units waiting for a worker.
    pub ready: usize,
    /// Transitions running.
    pub in_flight: usize,
    /// Units waiting for a retry.
    pub waiting: usize,
    /// Units completed.
    pub completed: u64,
    /// Units ended as dead letters.
    pub dead: u64,
    /// Step attempts so far (successful or not).
    pub attempts: u64,
    /// Retries scheduled so far.
    pub retries: u64,
}

impl Snapshot {
    /// The counts for state `name`, if it was seen.
    pub fn state(&self, name: &str) -> Option<&StateCounts> {
        self.states.iter().find(|s| s.state == name)
    }
}

/// A handle to the live [`Snapshot`] of a run; clone it freely.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<Mutex<Snapshot>>,
}

impl Progress {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn publish(&self, snapshot: &Snapshot) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone_from(snapshot);
    }
}

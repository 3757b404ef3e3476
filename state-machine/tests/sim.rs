//! A scripted machine shared by the integration tests: three states, optional latency,
//! failures decided per (unit, state, attempt), and measurements of what ran.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use state_machine::{Machine, StepError, Transition, Unit};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum St {
    Download,
    Transform(u64),
    Upload(u64),
}

pub const STATES: [&str; 3] = ["download", "transform", "upload"];

fn index(s: &St) -> usize {
    match s {
        St::Download => 0,
        St::Transform(_) => 1,
        St::Upload(_) => 2,
    }
}

type FailFn = dyn Fn(&str, &St, u32) -> Option<StepError> + Send + Sync;

pub struct Event {
    pub id: String,
    pub state: &'static str,
    pub attempt: u32,
    pub start: Instant,
    pub end: Instant,
    pub failed: bool,
}

pub struct Sim {
    pub delay: Duration,
    fail: Box<FailFn>,
    calls: Mutex<HashMap<(String, usize), u32>>,
    in_flight: [AtomicUsize; 3],
    max_in_flight: [AtomicUsize; 3],
    all_in_flight: AtomicUsize,
    all_max: AtomicUsize,
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    pub events: Mutex<Vec<Event>>,
}

impl Sim {
    pub fn new(
        delay: Duration,
        fail: impl Fn(&str, &St, u32) -> Option<StepError> + Send + Sync + 'static,
    ) -> Self {
        Sim {
            delay,
            fail: Box::new(fail),
            calls: Mutex::default(),
            in_flight: Default::default(),
            max_in_flight: Default::default(),
            all_in_flight: AtomicUsize::new(0),
            all_max: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
            events: Mutex::default(),
        }
    }

    pub fn ok(delay: Duration) -> Self {
        Sim::new(delay, |_, _, _| None)
    }

    /// How many times the transition out of `state` ran for unit `id`.
    pub fn calls(&self, id: &str, state: &str) -> u32 {
        let i = STATES.iter().position(|s| *s == state).unwrap();
        self.calls
            .lock()
            .unwrap()
            .get(&(id.to_string(), i))
            .copied()
            .unwrap_or(0)
    }

    pub fn max_in_flight(&self, state: &str) -> usize {
        let i = STATES.iter().position(|s| *s == state).unwrap();
        self.max_in_flight[i].load(Ordering::SeqCst)
    }

    pub fn max_in_flight_total(&self) -> usize {
        self.all_max.load(Ordering::SeqCst)
    }
}

/// The value a unit's download yields: a pure function of its id.
pub fn value_of(id: &str) -> u64 {
    id.bytes().map(u64::from).sum()
}

pub fn units(n: usize) -> Vec<Unit<St>> {
    (0..n)
        .map(|i| Unit::new(format!("u{i:05}"), St::Download))
        .collect()
}

impl Machine for Sim {
    type State = St;

    fn state_name(&self, state: &St) -> &'static str {
        STATES[index(state)]
    }

    async fn step(&self, id: &str, state: &St) -> Result<Transition<St>, StepError> {
        let i = index(state);
        let attempt = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry((id.to_string(), i)).or_insert(0);
            *n += 1;
            *n
        };
        self.started.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight[i].fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight[i].fetch_max(now, Ordering::SeqCst);
        let all = self.all_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.all_max.fetch_max(all, Ordering::SeqCst);
        let start = Instant::now();
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let failure = (self.fail)(id, state, attempt);
        self.in_flight[i].fetch_sub(1, Ordering::SeqCst);
        self.all_in_flight.fetch_sub(1, Ordering::SeqCst);
        self.events.lock().unwrap().push(Event {
            id: id.to_string(),
            state: STATES[i],
            attempt,
            start,
            end: Instant::now(),
            failed: failure.is_some(),
        });
        self.finished.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(match state {
            St::Download => Transition::Next(St::Transform(value_of(id))),
            St::Transform(v) => Transition::Next(St::Upload(v * 2)),
            St::Upload(_) => Transition::Completed,
        })
    }
}

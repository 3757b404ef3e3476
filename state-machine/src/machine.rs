//! What a user supplies: units, states, the step function and its error classification.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// One unit of work: an id unique within a run (and within a journal) and its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit<S> {
    /// The unit's id, e.g. `client-7/2026-01-03`.
    pub id: String,
    /// The state the unit is in: it names the next transition to perform.
    pub state: S,
}

impl<S> Unit<S> {
    /// A unit with `id` in `state`.
    pub fn new(id: impl Into<String>, state: S) -> Self {
        Unit {
            id: id.into(),
            state,
        }
    }
}

/// What a successful step returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition<S> {
    /// The unit moves on to this state.
    Next(S),
    /// The unit is done.
    Completed,
}

/// How a failed step is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// Retry the same transition later, after the backoff delay or `retry_after` when the
    /// server said how long to wait (e.g. an HTTP `Retry-After` header).
    Transient {
        /// The server-given delay before the retry, replacing the backoff delay.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: the unit ends as a dead letter at once.
    Permanent,
}

/// A failed step: its classification and a message naming what failed and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    kind: ErrorKind,
    message: String,
}

impl StepError {
    /// A transient failure: the transition is retried after the backoff delay.
    pub fn transient(message: impl fmt::Display) -> Self {
        StepError {
            kind: ErrorKind::Transient { retry_after: None },
            message: message.to_string(),
        }
    }

    /// A transient failure with a server-given delay before the retry.
    pub fn retry_after(message: impl fmt::Display, delay: Duration) -> Self {
        StepError {
            kind: ErrorKind::Transient {
                retry_after: Some(delay),
            },
            message: message.to_string(),
        }
    }

    /// A permanent failure: the unit becomes a dead letter without retry.
    pub fn permanent(message: impl fmt::Display) -> Self {
        StepError {
            kind: ErrorKind::Permanent,
            message: message.to_string(),
        }
    }

    /// The classification.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the transition may be retried.
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, ErrorKind::Transient { .. })
    }

    /// The server-given delay before the retry, if any.
    pub fn retry_after_hint(&self) -> Option<Duration> {
        match self.kind {
            ErrorKind::Transient { retry_after } => retry_after,
            ErrorKind::Permanent => None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Transient { retry_after: None } => write!(f, "transient: {}", self.message),
            ErrorKind::Transient {
                retry_after: Some(d),
            } => write!(
                f,
                "transient (retry after {:.3}s): {}",
                d.as_secs_f64(),
                self.message
            ),
            ErrorKind::Permanent => write!(f, "permanent: {}", self.message),
        }
    }
}

impl std::error::Error for StepError {}

/// A machine type: its states and the step function performing the transition a state names.
///
/// Steps must be idempotent: a transition may run again after a failure, a crash or a resume
/// from the journal, and must then give the same end state.
///
/// ```
/// use state_machine::{Machine, StepError, Transition};
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// enum Job { Fetch, Store(u32) }
///
/// struct Jobs;
/// impl Machine for Jobs {
///     type State = Job;
///     fn state_name(&self, state: &Job) -> &'static str {
///         match state { Job::Fetch => "fetch", Job::Store(_) => "store" }
///     }
///     async fn step(&self, _id: &str, state: &Job) -> Result<Transition<Job>, StepError> {
///         Ok(match state {
///             Job::Fetch => Transition::Next(Job::Store(42)),
///             Job::Store(_) => Transition::Completed,
///         })
///     }
/// }
/// ```
pub trait Machine: Send + Sync + 'static {
    /// The state of one unit: what it has, and which transition comes next.
    type State: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The name of the transition `state` names (a small fixed set, e.g. `"download"`):
    /// limits, metrics and snapshots are per name.
    fn state_name(&self, state: &Self::State) -> &'static str;

    /// Performs the transition `state` names for unit `id`.
    fn step(
        &self,
        id: &str,
        state: &Self::State,
    ) -> impl Future<Output = Result<Transition<Self::State>, StepError>> + Send;
}

/// A unit that will not complete: a permanent error, or a transient one past the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter<S> {
    /// The unit's id.
    pub id: String,
    /// The state whose transition failed.
    pub state: S,
    /// The last error.
    pub error: StepError,
    /// How many times the failing transition was attempted.
    pub attempts: u32,
}

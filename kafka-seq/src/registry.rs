//! The producer's registries of lanes (delivery lanes and detached lanes): a lane's state
//! is found by number from the delivery thread, and leaves the registry when both of its
//! halves are gone and its last message was reported.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use slab::Slab;

use crate::Error;
use crate::opaque::MAX_LANES;

/// A registry of lanes of one kind, by number.
pub(crate) type Registry<S> = Mutex<Slab<Arc<S>>>;

/// What a registry needs of a lane's state.
pub(crate) trait Registered {
    /// Messages handed to librdkafka and not reported.
    fn outstanding(&self) -> &AtomicUsize;
    /// Both halves are gone (written under the registry lock).
    fn closed(&self) -> &AtomicBool;
}

/// Held by both halves of a lane; the last one dropped closes it, and removes it from the
/// registry if nothing is in flight (otherwise its last report does).
pub(crate) struct Registration<S: Registered> {
    lanes: Arc<Registry<S>>,
    pub(crate) lane: usize,
    shared: Arc<S>,
}

impl<S: Registered> Drop for Registration<S> {
    fn drop(&mut self) {
        let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.closed().store(true, Ordering::SeqCst);
        if self.shared.outstanding().load(Ordering::SeqCst) == 0 {
            lanes.try_remove(self.lane);
        }
    }
}

impl<S: Registered> Registration<S> {
    /// The registry this lane is in (its lock is the one reports hold).
    pub(crate) fn registry(&self) -> &Registry<S> {
        &self.lanes
    }
}

/// Enters `shared` in `lanes`.
///
/// # Errors
/// [`Error::TooManyLanes`] when the registry holds as many lanes as a ticket can number.
pub(crate) fn register<S: Registered>(
    lanes: Arc<Registry<S>>,
    shared: Arc<S>,
) -> Result<Arc<Registration<S>>, Error> {
    let lane = {
        let mut l = lanes.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() >= MAX_LANES {
            return Err(Error::TooManyLanes { max: MAX_LANES });
        }
        l.insert(shared.clone())
    };
    Ok(Arc::new(Registration {
        lanes,
        lane,
        shared,
    }))
}

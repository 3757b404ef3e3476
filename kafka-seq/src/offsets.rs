//! Per-partition bookkeeping of delivered and acknowledged offsets: what may be committed is
//! the highest contiguously acknowledged offset + 1, never more.
//!
//! Each assignment of a partition gets its own [`Part`], shared with the acknowledgement
//! handles of its messages: an ack locks only its partition (no map lookup, no lock shared
//! with other partitions), and acks of an earlier assignment land on a revoked `Part` and
//! are ignored. The partition's metric handles live in its `Part` too, so the per-message
//! path increments them without a lookup.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics::PartitionMetrics;

/// One assignment of one partition.
#[derive(Debug)]
pub(crate) struct Part {
    /// The topic's name, shared by its partitions and messages.
    pub topic: Arc<str>,
    /// The partition number.
    pub partition: i32,
    /// Unique among the process's assignments (a seek starts a new one too).
    pub id: u64,
    /// The metrics of this partition (labels built once per assignment).
    pub metrics: PartitionMetrics,
    /// Set with `state.revoked` (under its lock): read without the lock to skip a revoked
    /// assignment's messages in [`Tracker::current`].
    gone: AtomicBool,
    state: Mutex<PartState>,
}

/// What a [`Part`] tracks.
#[derive(Debug, Default)]
struct PartState {
    /// Set when the partition is revoked (or assigned again): acks no longer count.
    revoked: bool,
    /// Delivered, not yet contiguously acknowledged offsets in delivery order: runs
    /// `(first, last, acknowledged)`. An unacknowledged run is one offset; acknowledged
    /// offsets merge into the run before them when it is acknowledged too, so a consumer
    /// that holds one message and acknowledges the many after it keeps two runs, not one
    /// entry per message.
    pending: VecDeque<(i64, i64, bool)>,
    /// The offset to commit (last contiguously acknowledged + 1).
    committable: Option<i64>,
    /// The offset last handed to a commit.
    committed: Option<i64>,
    /// Set by a nack (or an ack handle dropped unacknowledged): commits never pass it for the
    /// rest of this assignment and later deliveries are not tracked.
    limit: Option<i64>,
    /// The offset after the last one handed out (for the lag), once one was.
    next: Option<i64>,
    /// The highest offset Kafka confirmed committing (for the committed-offset gauge).
    confirmed: Option<i64>,
}

impl PartState {
    /// The message at `offset` was processed: the commit point moves past every
    /// contiguously acknowledged offset.
    fn ack(&mut self, offset: i64) {
        // The newest delivery is the usual one: no search.
        let newest = self.pending.len().checked_sub(1).filter(|&i| {
            let (first, last, _) = self.pending[i];
            first <= offset && offset <= last
        });
        let found = newest.ok_or(()).or_else(|()| {
            self.pending.binary_search_by(|&(first, last, _)| {
                if last < offset {
                    std::cmp::Ordering::Less
                } else if first > offset {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
        });
        let Ok(i) = found else {
            return;
        };
        if self.pending[i].2 {
            return; // acknowledged already
        }
        self.pending[i].2 = true;
        // Merge with the acknowledged run before it (the common case: the newest message).
        if i > 0 && self.pending[i - 1].2 {
            let last = self.pending[i].1;
            self.pending[i - 1].1 = last;
            self.pending.remove(i);
        }
        while let Some(&(_, last, true)) = self.pending.front() {
            self.pending.pop_front();
            self.committable = Some(last + 1);
        }
    }

    /// The message at `offset` was not processed: commits stop before it for the rest of
    /// this assignment, so it is redelivered after a restart or rebalance.
    fn nack(&mut self, offset: i64) {
        let limit = self.limit.map_or(offset, |l| l.min(offset));
        self.limit = Some(limit);
        // Offsets at or past the limit can never be committed now: stop tracking them.
        while self
            .pending
            .back()
            .is_some_and(|(first, _, _)| *first >= limit)
        {
            self.pending.pop_back();
        }
    }

    fn settle(&mut self, offset: i64, processed: bool) {
        if processed {
            self.ack(offset);
        } else {
            self.nack(offset);
        }
    }

    /// Whether the delivery of `offset` is tracked (its ack can move the commit point).
    fn deliver(&mut self, offset: i64) -> bool {
        if self.next.is_none_or(|n| n <= offset) {
            self.next = Some(offset + 1);
        }
        if self.limit.is_some() {
            false
        } else if self
            .pending
            .back()
            .is_some_and(|(_, last, _)| *last >= offset)
        {
            // Offsets only grow within an assignment; a repeat is not tracked twice.
            false
        } else {
            self.pending.push_back((offset, offset, false));
            true
        }
    }
}

impl Part {
    fn lock(&self) -> MutexGuard<'_, PartState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tracked message at `offset` was processed (tests: `settle` without the count).
    #[cfg(test)]
    fn ack(&self, offset: i64) {
        let mut state = self.lock();
        if !state.revoked {
            state.ack(offset);
        }
    }

    /// The tracked message at `offset` was not processed: commits stop before it for the
    /// rest of this assignment (tests: `settle` without the count).
    #[cfg(test)]
    fn nack(&self, offset: i64) {
        let mut state = self.lock();
        if !state.revoked {
            state.nack(offset);
        }
    }

    /// Marks the assignment ended (under its lock).
    fn end(&self, state: &mut PartState) {
        state.revoked = true;
        self.gone.store(true, Ordering::Release);
    }

    /// A handed-out message is done with: counted as acknowledged (`processed`) or not,
    /// and, when it is `tracked`, acked or nacked.
    pub fn settle(&self, offset: i64, tracked: bool, processed: bool) {
        self.count(processed);
        if !tracked {
            return;
        }
        let mut state = self.lock();
        if !state.revoked {
            state.settle(offset, processed);
        }
    }

    /// Counts a handed-out message as acknowledged or not.
    fn count(&self, processed: bool) {
        if processed {
            self.metrics.acked.increment(1);
        } else {
            self.metrics.nacked.increment(1);
        }
    }

    /// A message handed out untracked (by [`Tracker::current`]) is done with, in one step
    /// under one lock: tracked as delivered, then acknowledged (`processed`) or not, as
    /// [`deliver`](Self::deliver) then [`settle`](Self::settle) would. Messages of one
    /// assignment must be settled this way in offset order, each before the next one is
    /// delivered or settled (the batch interface does: one message at a time).
    pub fn settle_fresh(&self, offset: i64, processed: bool) {
        self.count(processed);
        let mut state = self.lock();
        if !state.revoked && state.deliver(offset) {
            state.settle(offset, processed);
        }
    }

    /// Starts tracking `offset`, delivered under this assignment: whether its ack can move
    /// the commit point; `None` when the assignment ended.
    pub fn deliver(&self, offset: i64) -> Option<bool> {
        let mut state = self.lock();
        if state.revoked {
            return None;
        }
        Some(state.deliver(offset))
    }

    /// Whether this assignment ended (revoked, assigned again, or sought).
    pub fn is_revoked(&self) -> bool {
        self.lock().revoked
    }

    /// Kafka confirmed committing `offset`: the committed-offset gauge follows (never
    /// backwards, as a late confirmation of an earlier commit may arrive after a later one).
    pub fn committed(&self, offset: i64) {
        let mut state = self.lock();
        if state.confirmed.is_none_or(|c| c < offset) {
            state.confirmed = Some(offset);
            self.metrics.committed_offset.set(offset as f64);
        }
    }

    /// Sets the lag gauge from the partition's high watermark `high`: how many messages
    /// after the next one to hand out. Nothing until a message was handed out in this
    /// assignment (the position is unknown before).
    pub fn sample_lag(&self, high: i64) {
        let next = {
            let state = self.lock();
            if state.revoked {
                return;
            }
            state.next
        };
        if let Some(next) = next {
            self.metrics
                .lag
                .set(high.saturating_sub(next).max(0) as f64);
        }
    }
}

#[derive(Debug)]
struct TopicParts {
    name: Arc<str>,
    parts: Vec<Option<Arc<Part>>>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: HashMap<Box<str>, TopicParts>,
}

/// How a delivered message is tracked.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// The assignment it was delivered under.
    pub part: Arc<Part>,
    /// Whether its ack can move the commit point (false after a nack on the partition).
    pub tracked: bool,
}

/// Offsets of all assigned partitions of one consumer.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    inner: Mutex<Inner>,
}

fn index(partition: i32) -> Option<usize> {
    usize::try_from(partition).ok()
}

impl Inner {
    fn part(&self, topic: &str, partition: i32) -> Option<&Arc<Part>> {
        self.topics
            .get(topic)?
            .parts
            .get(index(partition)?)?
            .as_ref()
    }

    fn parts(&self) -> impl Iterator<Item = &Arc<Part>> {
        self.topics.values().flat_map(|t| t.parts.iter().flatten())
    }
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A partition was assigned: it starts afresh (acks of an earlier assignment no longer
    /// count). Returns the new assignment's id (0 for an absurd partition number).
    pub fn assign(&self, topic: &str, partition: i32) -> u64 {
        let Some(i) = index(partition) else { return 0 };
        // Partition numbers come from the broker's metadata; refuse absurd ones.
        if i > 1_000_000 {
            return 0;
        }
        let mut g = self.lock();
        let tp = g.topics.entry(topic.into()).or_insert_with(|| TopicParts {
            name: topic.into(),
            parts: Vec::new(),
        });
        if tp.parts.len() <= i {
            tp.parts.resize_with(i + 1, || None);
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let part = Arc::new(Part {
            topic: tp.name.clone(),
            partition,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            metrics: PartitionMetrics::new(topic, partition),
            gone: AtomicBool::new(false),
            state: Mutex::new(PartState::default()),
        });
        let id = part.id;
        if let Some(old) = tp.parts[i].replace(part) {
            old.end(&mut old.lock());
        }
        id
    }

    /// A partition is revoked: forget it and return the offset to commit for it, if any
    /// progress was not committed yet, with the assignment it belonged to. Its lag gauge
    /// goes to 0 (this consumer no longer lags on it; its next owner reports its own).
    pub fn revoke(&self, topic: &str, partition: i32) -> Option<(i64, Arc<Part>)> {
        let mut g = self.lock();
        let tp = g.topics.get_mut(topic)?;
        let part = tp.parts.get_mut(index(partition)?)?.take()?;
        if tp.parts.iter().all(Option::is_none) {
            g.topics.remove(topic);
        }
        let offset = {
            let mut state = part.lock();
            part.end(&mut state);
            state.committable.filter(|c| state.committed != Some(*c))
        };
        part.metrics.lag.set(0.0);
        offset.map(|o| (o, part))
    }

    /// A message was fetched; `None` when its partition is not assigned (a stale message
    /// of a revoked partition, which must not be handed out).
    ///
    /// `last` is the caller's cache of the assignment it delivered to before: when the
    /// message belongs to it and it is still current, neither the tracker's lock nor a map
    /// lookup is needed (consecutive messages mostly come from one partition). A revoked
    /// assignment is seen as such here: [`assign`](Self::assign) and
    /// [`revoke`](Self::revoke) mark it under its own lock, which this takes too.
    pub fn deliver(
        &self,
        last: &mut Option<Arc<Part>>,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Option<Delivered> {
        if let Some(part) = last.as_ref()
            && part.partition == partition
            && *part.topic == *topic
            && let Some(tracked) = part.deliver(offset)
        {
            return Some(Delivered {
                part: part.clone(),
                tracked,
            });
        }
        let part = self.lock().part(topic, partition)?.clone();
        let tracked = part.deliver(offset)?;
        *last = Some(part.clone());
        Some(Delivered { part, tracked })
    }

    /// The current assignment of a fetched message's partition, without tracking the
    /// message (the batch interface settles it later with [`Part::settle_fresh`]); `None`
    /// when the partition is not assigned here. As [`deliver`](Self::deliver), uses and
    /// refreshes the caller's cache `last`; a cached assignment is used only while its
    /// `gone` flag is clear.
    pub fn current<'a>(
        &self,
        last: &'a mut Option<Arc<Part>>,
        topic: &str,
        partition: i32,
    ) -> Option<&'a Arc<Part>> {
        let cached = last.as_ref().is_some_and(|part| {
            part.partition == partition
                && *part.topic == *topic
                && !part.gone.load(Ordering::Acquire)
        });
        if !cached {
            let part = self.lock().part(topic, partition)?.clone();
            if part.gone.load(Ordering::Acquire) {
                return None;
            }
            *last = Some(part);
        }
        last.as_ref()
    }

    /// Offsets to commit now (progress since the last commit); marks them committed.
    pub fn take_commits(&self) -> Vec<(Arc<str>, i32, i64)> {
        let g = self.lock();
        let mut out = Vec::new();
        for part in g.parts() {
            let mut state = part.lock();
            let Some(c) = state.committable else { continue };
            if state.committed != Some(c) {
                state.committed = Some(c);
                out.push((part.topic.clone(), part.partition, c));
            }
        }
        out
    }

    /// Kafka confirmed committing `offset` for this partition (if still assigned here).
    pub fn committed(&self, topic: &str, partition: i32, offset: i64) {
        let part = self.lock().part(topic, partition).cloned();
        if let Some(part) = part {
            part.committed(offset);
        }
    }

    /// Whether `topic`/`partition` is assigned here now.
    pub fn is_assigned(&self, topic: &str, partition: i32) -> bool {
        self.lock().part(topic, partition).is_some()
    }

    /// The assigned partitions (their current assignments).
    pub fn parts(&self) -> Vec<Arc<Part>> {
        self.lock().parts().cloned().collect()
    }

    /// A commit of `offset` failed: commit it again next time.
    pub fn commit_failed(&self, topic: &str, partition: i32, offset: i64) {
        let g = self.lock();
        if let Some(part) = g.part(topic, partition) {
            let mut state = part.lock();
            if state.committed == Some(offset) {
                state.committed = None;
            }
        }
    }

    /// Number of assigned partitions with acknowledged progress not yet committed.
    pub fn uncommitted(&self) -> usize {
        let g = self.lock();
        g.parts()
            .filter(|p| {
                let s = p.lock();
                s.committable.is_some() && s.committable != s.committed
            })
            .count()
    }

    /// The assigned partitions with their assignment ids, sorted.
    pub fn assignment_ids(&self) -> Vec<(Arc<str>, i32, u64)> {
        let g = self.lock();
        let mut out: Vec<(Arc<str>, i32, u64)> = g
            .parts()
            .map(|p| (p.topic.clone(), p.partition, p.id))
            .collect();
        out.sort();
        out
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<(Arc<str>, i32)> {
        let g = self.lock();
        let mut out: Vec<(Arc<str>, i32)> =
            g.parts().map(|p| (p.topic.clone(), p.partition)).collect();
        out.sort();
        out
    }

    /// Number of delivered messages whose acknowledgement is awaited (tracked ones).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        let g = self.lock();
        g.parts().map(|p| p.lock().pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(t: &Tracker) -> Vec<(String, i32, i64)> {
        let mut v: Vec<_> = t
            .take_commits()
            .into_iter()
            .map(|(t, p, o)| (t.to_string(), p, o))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_the_contiguous_acked_prefix_is_committable() {
        let t = Tracker::default();
        t.assign("a", 0);
        let p = t.deliver(&mut None, "a", 0, 10).unwrap().part;
        for o in 11..15 {
            t.deliver(&mut None, "a", 0, o).unwrap();
        }
        p.ack(12);
        p.ack(13);
        assert!(commits(&t).is_empty(), "10 is not acked yet");
        p.ack(10);
        assert_eq!(commits(&t), vec![("a".into(), 0, 11)]);
        p.ack(11);
        assert_eq!(commits(&t), vec![("a".into(), 0, 14)]);
        assert!(commits(&t).is_empty(), "nothing new");
        p.ack(14);
        assert_eq!(commits(&t), vec![("a".into(), 0, 15)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_block_commits() {
        let t = Tracker::default();
        t.assign("a", 3);
        let p = t.deliver(&mut None, "a", 3, 5).unwrap().part;
        t.deliver(&mut None, "a", 3, 9).unwrap(); // 6..8 compacted away or transaction markers
        p.ack(9);
        p.ack(5);
        assert_eq!(commits(&t), vec![("a".into(), 3, 10)]);
    }

    #[test]
    fn nack_freezes_the_commit_point_before_it() {
        let t = Tracker::default();
        t.assign("a", 0);
        let p = t.deliver(&mut None, "a", 0, 0).unwrap().part;
        for o in 1..5 {
            t.deliver(&mut None, "a", 0, o).unwrap();
        }
        p.nack(2);
        for o in [1, 3, 4] {
            p.ack(o);
        }
        assert!(commits(&t).is_empty(), "0 is not acked yet");
        p.ack(0);
        assert_eq!(commits(&t), vec![("a".into(), 0, 2)]);
        let later = t.deliver(&mut None, "a", 0, 5).unwrap();
        assert!(!later.tracked);
        p.ack(5);
        assert!(commits(&t).is_empty());
        assert_eq!(t.pending(), 0, "nothing tracked past the nack");
    }

    #[test]
    fn acks_of_an_old_assignment_are_ignored() {
        let t = Tracker::default();
        t.assign("a", 1);
        let old = t.deliver(&mut None, "a", 1, 7).unwrap().part;
        assert!(t.revoke("a", 1).is_none());
        assert!(
            t.deliver(&mut None, "a", 1, 8).is_none(),
            "revoked partitions are not handed out"
        );
        t.assign("a", 1);
        let new = t.deliver(&mut None, "a", 1, 7).unwrap().part;
        assert!(!Arc::ptr_eq(&old, &new));
        old.ack(7);
        assert!(commits(&t).is_empty());
        new.ack(7);
        assert_eq!(commits(&t), vec![("a".into(), 1, 8)]);
        // Assigned again without a revoke in between: the older assignment stops counting.
        t.assign("a", 1);
        let newer = t.deliver(&mut None, "a", 1, 8).unwrap().part;
        new.ack(8);
        assert!(commits(&t).is_empty());
        newer.ack(8);
        assert_eq!(commits(&t), vec![("a".into(), 1, 9)]);
    }

    #[test]
    fn the_cached_assignment_is_used_only_while_current() {
        let t = Tracker::default();
        t.assign("a", 1);
        t.assign("b", 1);
        let mut last = None;
        let first = t.deliver(&mut last, "a", 1, 0).unwrap().part;
        assert!(Arc::ptr_eq(last.as_ref().unwrap(), &first));
        // Another partition (same number, other topic) is looked up and cached.
        let b = t.deliver(&mut last, "b", 1, 0).unwrap().part;
        assert!(!Arc::ptr_eq(&first, &b) && Arc::ptr_eq(last.as_ref().unwrap(), &b));
        let again = t.deliver(&mut last, "a", 1, 1).unwrap().part;
        assert!(Arc::ptr_eq(&first, &again));
        // Assigned anew: the cached one is revoked, the new one is found and cached.
        t.assign("a", 1);
        let second = t.deliver(&mut last, "a", 1, 5).unwrap().part;
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(last.as_ref().unwrap(), &second));
        // Revoked: nothing is handed out, cache or not.
        t.revoke("a", 1);
        assert!(t.deliver(&mut last, "a", 1, 6).is_none());
        second.ack(5);
        assert!(commits(&t).is_empty());
    }

    #[test]
    fn untracked_messages_settle_in_one_step_around_held_ones() {
        let t = Tracker::default();
        t.assign("a", 0);
        let mut last = None;
        assert!(t.current(&mut last, "a", 1).is_none(), "not assigned here");
        let part = t.current(&mut last, "a", 0).unwrap().clone();
        part.settle_fresh(0, true);
        part.settle_fresh(1, true);
        assert_eq!(commits(&t), [("a".to_string(), 0, 2)]);
        // 2 is held (tracked when held), 3 and 4 settle while it is out: no commit past 2.
        assert_eq!(part.deliver(2), Some(true));
        part.settle_fresh(3, true);
        part.settle_fresh(4, true);
        assert!(commits(&t).is_empty());
        part.ack(2);
        assert_eq!(commits(&t), [("a".to_string(), 0, 5)]);
        // Not processed (the callback panicked): commits stop before it for good.
        part.settle_fresh(5, false);
        part.settle_fresh(6, true);
        assert!(commits(&t).is_empty());
        // Assigned anew: the cached assignment is not used; the old one ignores settles.
        t.assign("a", 0);
        let second = t.current(&mut last, "a", 0).unwrap().clone();
        assert!(!Arc::ptr_eq(&part, &second));
        part.settle_fresh(7, true);
        assert!(commits(&t).is_empty());
        second.settle_fresh(10, true);
        assert_eq!(commits(&t), [("a".to_string(), 0, 11)]);
        t.revoke("a", 0);
        assert!(
            t.current(&mut last, "a", 0).is_none(),
            "revoked: cache or not"
        );
    }

    #[test]
    fn revoke_returns_uncommitted_progress() {
        let t = Tracker::default();
        t.assign("a", 0);
        t.assign("b", 2);
        let pa = t.deliver(&mut None, "a", 0, 0).unwrap().part;
        pa.ack(0);
        let pb = t.deliver(&mut None, "b", 2, 4).unwrap().part;
        pb.ack(4);
        assert_eq!(commits(&t).len(), 2);
        t.deliver(&mut None, "a", 0, 1).unwrap();
        pa.ack(1);
        assert_eq!(t.assignment().len(), 2);
        assert_eq!(t.revoke("a", 0).map(|(o, _)| o), Some(2));
        assert!(t.revoke("b", 2).is_none(), "already committed");
        assert_eq!(t.uncommitted(), 0);
        assert!(t.assignment().is_empty());
    }

    #[test]
    fn committed_offset_and_lag_gauges() {
        let recorder = telemetry::Recorder::new();
        let t = Tracker::default();
        // The partition's handles are built at assignment.
        metrics::with_local_recorder(&recorder, || t.assign("m", 2));
        let labels = [("partition", "2"), ("topic", "m")];
        let gauge = |name: &str| recorder.snapshot().gauge(name, &labels);
        let p = t.deliver(&mut None, "m", 2, 10).unwrap().part;
        p.sample_lag(20);
        assert_eq!(
            gauge("kafka_seq_consumer_lag"),
            Some(9.0),
            "next to hand out: 11"
        );
        t.deliver(&mut None, "m", 2, 11).unwrap();
        p.sample_lag(20);
        assert_eq!(gauge("kafka_seq_consumer_lag"), Some(8.0));
        p.sample_lag(5);
        assert_eq!(gauge("kafka_seq_consumer_lag"), Some(0.0), "never negative");
        t.committed("m", 2, 11);
        assert_eq!(gauge("kafka_seq_consumer_committed_offset"), Some(11.0));
        t.committed("m", 2, 10);
        assert_eq!(
            gauge("kafka_seq_consumer_committed_offset"),
            Some(11.0),
            "a late confirmation of an earlier commit does not move it back"
        );
        t.committed("m", 3, 50); // not assigned: nothing
        p.ack(10);
        p.ack(11);
        p.sample_lag(20);
        assert_eq!(gauge("kafka_seq_consumer_lag"), Some(8.0));
        let (offset, revoked) = t.revoke("m", 2).unwrap();
        assert_eq!(
            gauge("kafka_seq_consumer_lag"),
            Some(0.0),
            "not ours any more"
        );
        assert_eq!(offset, 12);
        revoked.committed(offset);
        assert_eq!(gauge("kafka_seq_consumer_committed_offset"), Some(12.0));
        revoked.sample_lag(100);
        assert_eq!(
            gauge("kafka_seq_consumer_lag"),
            Some(0.0),
            "a revoked assignment's lag is not sampled again"
        );
    }

    #[test]
    fn lag_is_unknown_until_a_message_was_handed_out() {
        let recorder = telemetry::Recorder::new();
        let t = Tracker::default();
        metrics::with_local_recorder(&recorder, || t.assign("n", 0));
        let lag = || {
            recorder.snapshot().gauge(
                "kafka_seq_consumer_lag",
                &[("topic", "n"), ("partition", "0")],
            )
        };
        for part in t.parts() {
            part.sample_lag(7);
        }
        assert_eq!(lag(), Some(0.0), "registered, not set (7 would be a guess)");
        t.deliver(&mut None, "n", 0, 5).unwrap();
        for part in t.parts() {
            part.sample_lag(7);
        }
        assert_eq!(lag(), Some(1.0));
    }

    #[test]
    fn acknowledged_runs_take_one_entry() {
        let t = Tracker::default();
        t.assign("a", 0);
        let p = t.deliver(&mut None, "a", 0, 100).unwrap().part;
        // The first is held; the many after it are acknowledged at once.
        for o in 101..10_000 {
            t.deliver(&mut None, "a", 0, o).unwrap();
            p.ack(o);
        }
        assert_eq!(t.pending(), 2, "the held offset and one acknowledged run");
        assert!(commits(&t).is_empty(), "100 is held");
        t.deliver(&mut None, "a", 0, 10_000).unwrap(); // held too (the next batch's first)
        for o in 10_001..10_010 {
            t.deliver(&mut None, "a", 0, o).unwrap();
            p.ack(o);
        }
        assert_eq!(t.pending(), 4);
        p.ack(100);
        assert_eq!(commits(&t), vec![("a".into(), 0, 10_000)]);
        p.ack(100); // a repeat changes nothing
        p.ack(10_000);
        assert_eq!(commits(&t), vec![("a".into(), 0, 10_010)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn out_of_order_acks_inside_runs() {
        let t = Tracker::default();
        t.assign("a", 0);
        let p = t.deliver(&mut None, "a", 0, 0).unwrap().part;
        for o in 1..6 {
            t.deliver(&mut None, "a", 0, o).unwrap();
        }
        for o in [3, 2, 5, 1] {
            p.ack(o);
        }
        assert!(commits(&t).is_empty());
        p.ack(0);
        assert_eq!(commits(&t), vec![("a".into(), 0, 4)], "4 is not acked");
        p.ack(4);
        assert_eq!(commits(&t), vec![("a".into(), 0, 6)]);
    }

    #[test]
    fn assignments_have_ids_and_know_they_ended() {
        let t = Tracker::default();
        t.assign("a", 0);
        let first = t.deliver(&mut None, "a", 0, 1).unwrap().part;
        assert!(!first.is_revoked());
        t.assign("a", 0); // a seek or a new assignment
        let second = t.deliver(&mut None, "a", 0, 1).unwrap().part;
        assert!(first.is_revoked() && !second.is_revoked());
        assert_ne!(first.id, second.id);
        assert!(t.is_assigned("a", 0) && !t.is_assigned("a", 1));
        t.revoke("a", 0);
        assert!(second.is_revoked());
    }

    #[test]
    fn failed_commits_are_retried() {
        let t = Tracker::default();
        t.assign("a", 0);
        let p = t.deliver(&mut None, "a", 0, 0).unwrap().part;
        p.ack(0);
        assert_eq!(commits(&t), vec![("a".into(), 0, 1)]);
        t.commit_failed("a", 0, 1);
        assert_eq!(commits(&t), vec![("a".into(), 0, 1)]);
        assert_eq!(t.uncommitted(), 0);
        t.commit_failed("a", 0, 1);
        assert_eq!(t.uncommitted(), 1);
    }
}

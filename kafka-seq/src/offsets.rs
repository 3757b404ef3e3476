//! Per-partition bookkeeping of delivered and acknowledged offsets: what may be committed is
//! the highest contiguously acknowledged offset + 1, never more.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// State of one assigned partition.
#[derive(Debug, Default)]
struct PartState {
    /// Assignment generation: acks of messages delivered under an older assignment are
    /// ignored (the partition may have moved to another consumer meanwhile).
    generation: u64,
    /// Delivered, not yet contiguously acknowledged offsets in delivery order, with their
    /// acknowledged flag.
    pending: VecDeque<(i64, bool)>,
    /// The offset to commit (last contiguously acknowledged + 1).
    committable: Option<i64>,
    /// The offset last handed to a commit.
    committed: Option<i64>,
    /// Set by a nack (or an ack handle dropped unacknowledged): commits never pass it for the
    /// rest of this assignment and later deliveries are not tracked.
    limit: Option<i64>,
}

#[derive(Debug)]
struct TopicParts {
    name: Arc<str>,
    parts: Vec<Option<PartState>>,
}

#[derive(Debug, Default)]
struct Inner {
    topics: HashMap<Box<str>, TopicParts>,
    next_generation: u64,
}

/// How a delivered message is tracked.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    /// The shared topic name.
    pub topic: Arc<str>,
    /// The assignment generation it was delivered under.
    pub generation: u64,
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
    fn part(&mut self, topic: &str, partition: i32) -> Option<&mut PartState> {
        let tp = self.topics.get_mut(topic)?;
        tp.parts.get_mut(index(partition)?)?.as_mut()
    }
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A partition was assigned: it starts afresh under a new generation.
    pub fn assign(&self, topic: &str, partition: i32) {
        let Some(i) = index(partition) else { return };
        // Partition numbers come from the broker's metadata; refuse absurd ones.
        if i > 1_000_000 {
            return;
        }
        let mut g = self.lock();
        g.next_generation += 1;
        let generation = g.next_generation;
        let tp = g.topics.entry(topic.into()).or_insert_with(|| TopicParts {
            name: topic.into(),
            parts: Vec::new(),
        });
        if tp.parts.len() <= i {
            tp.parts.resize_with(i + 1, || None);
        }
        tp.parts[i] = Some(PartState {
            generation,
            ..PartState::default()
        });
    }

    /// A partition is revoked: forget it and return the offset to commit for it, if any
    /// progress was not committed yet.
    pub fn revoke(&self, topic: &str, partition: i32) -> Option<i64> {
        let mut g = self.lock();
        let tp = g.topics.get_mut(topic)?;
        let state = tp.parts.get_mut(index(partition)?)?.take()?;
        if tp.parts.iter().all(Option::is_none) {
            g.topics.remove(topic);
        }
        state.committable.filter(|c| state.committed != Some(*c))
    }

    /// A message was fetched; `None` when its partition is not assigned (a stale message
    /// of a revoked partition, which must not be handed out).
    pub fn deliver(&self, topic: &str, partition: i32, offset: i64) -> Option<Delivered> {
        let mut g = self.lock();
        let tp = g.topics.get_mut(topic)?;
        let name = tp.name.clone();
        let state = tp.parts.get_mut(index(partition)?)?.as_mut()?;
        let tracked = state.limit.is_none();
        if tracked {
            if state
                .pending
                .back()
                .is_some_and(|(last, _)| *last >= offset)
            {
                // Offsets only grow within an assignment; a repeat is not tracked twice.
                return Some(Delivered {
                    topic: name,
                    generation: state.generation,
                    tracked: false,
                });
            }
            state.pending.push_back((offset, false));
        }
        Some(Delivered {
            topic: name,
            generation: state.generation,
            tracked,
        })
    }

    /// The message at `offset` was processed.
    pub fn ack(&self, topic: &str, partition: i32, offset: i64, generation: u64) {
        let mut g = self.lock();
        let Some(state) = g.part(topic, partition) else {
            return;
        };
        if state.generation != generation {
            return;
        }
        let Ok(i) = state.pending.binary_search_by_key(&offset, |(o, _)| *o) else {
            return;
        };
        state.pending[i].1 = true;
        while let Some(&(o, true)) = state.pending.front() {
            state.pending.pop_front();
            state.committable = Some(o + 1);
        }
    }

    /// The message at `offset` was not processed: commits stop before it for the rest of
    /// this assignment, so it is redelivered after a restart or rebalance.
    pub fn nack(&self, topic: &str, partition: i32, offset: i64, generation: u64) {
        let mut g = self.lock();
        let Some(state) = g.part(topic, partition) else {
            return;
        };
        if state.generation != generation {
            return;
        }
        let limit = state.limit.map_or(offset, |l| l.min(offset));
        state.limit = Some(limit);
        // Offsets at or past the limit can never be committed now: stop tracking them.
        while state.pending.back().is_some_and(|(o, _)| *o >= limit) {
            state.pending.pop_back();
        }
    }

    /// Offsets to commit now (progress since the last commit); marks them committed.
    pub fn take_commits(&self) -> Vec<(Arc<str>, i32, i64)> {
        let mut g = self.lock();
        let mut out = Vec::new();
        for tp in g.topics.values_mut() {
            for (p, state) in tp.parts.iter_mut().enumerate() {
                let Some(state) = state else { continue };
                let Some(c) = state.committable else { continue };
                if state.committed != Some(c) {
                    state.committed = Some(c);
                    if let Ok(p) = i32::try_from(p) {
                        out.push((tp.name.clone(), p, c));
                    }
                }
            }
        }
        out
    }

    /// A commit of `offset` failed: commit it again next time.
    pub fn commit_failed(&self, topic: &str, partition: i32, offset: i64) {
        let mut g = self.lock();
        if let Some(state) = g.part(topic, partition)
            && state.committed == Some(offset)
        {
            state.committed = None;
        }
    }

    /// Number of assigned partitions with acknowledged progress not yet committed.
    pub fn uncommitted(&self) -> usize {
        let g = self.lock();
        g.topics
            .values()
            .flat_map(|t| t.parts.iter().flatten())
            .filter(|s| s.committable.is_some() && s.committable != s.committed)
            .count()
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<(Arc<str>, i32)> {
        let g = self.lock();
        let mut out: Vec<(Arc<str>, i32)> = g
            .topics
            .values()
            .flat_map(|t| {
                t.parts.iter().enumerate().filter_map(|(p, s)| {
                    s.as_ref()?;
                    Some((t.name.clone(), i32::try_from(p).ok()?))
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Number of delivered messages whose acknowledgement is awaited (tracked ones).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        let g = self.lock();
        g.topics
            .values()
            .flat_map(|t| t.parts.iter().flatten())
            .map(|s| s.pending.len())
            .sum()
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
        let g = t.deliver("a", 0, 10).unwrap().generation;
        for o in 11..15 {
            t.deliver("a", 0, o).unwrap();
        }
        t.ack("a", 0, 12, g);
        t.ack("a", 0, 13, g);
        assert!(commits(&t).is_empty(), "10 is not acked yet");
        t.ack("a", 0, 10, g);
        assert_eq!(commits(&t), vec![("a".into(), 0, 11)]);
        t.ack("a", 0, 11, g);
        assert_eq!(commits(&t), vec![("a".into(), 0, 14)]);
        assert!(commits(&t).is_empty(), "nothing new");
        t.ack("a", 0, 14, g);
        assert_eq!(commits(&t), vec![("a".into(), 0, 15)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn gaps_in_offsets_do_not_block_commits() {
        let t = Tracker::default();
        t.assign("a", 3);
        let g = t.deliver("a", 3, 5).unwrap().generation;
        t.deliver("a", 3, 9).unwrap(); // 6..8 compacted away or transaction markers
        t.ack("a", 3, 9, g);
        t.ack("a", 3, 5, g);
        assert_eq!(commits(&t), vec![("a".into(), 3, 10)]);
    }

    #[test]
    fn nack_freezes_the_commit_point_before_it() {
        let t = Tracker::default();
        t.assign("a", 0);
        let g = t.deliver("a", 0, 0).unwrap().generation;
        for o in 1..5 {
            t.deliver("a", 0, o).unwrap();
        }
        t.nack("a", 0, 2, g);
        for o in [1, 3, 4] {
            t.ack("a", 0, o, g);
        }
        assert!(commits(&t).is_empty(), "0 is not acked yet");
        t.ack("a", 0, 0, g);
        assert_eq!(commits(&t), vec![("a".into(), 0, 2)]);
        let later = t.deliver("a", 0, 5).unwrap();
        assert!(!later.tracked);
        t.ack("a", 0, 5, g);
        assert!(commits(&t).is_empty());
        assert_eq!(t.pending(), 0, "nothing tracked past the nack");
    }

    #[test]
    fn acks_of_an_old_assignment_are_ignored() {
        let t = Tracker::default();
        t.assign("a", 1);
        let old = t.deliver("a", 1, 7).unwrap().generation;
        assert_eq!(t.revoke("a", 1), None);
        assert!(
            t.deliver("a", 1, 8).is_none(),
            "revoked partitions are not handed out"
        );
        t.assign("a", 1);
        let new = t.deliver("a", 1, 7).unwrap().generation;
        assert_ne!(old, new);
        t.ack("a", 1, 7, old);
        assert!(commits(&t).is_empty());
        t.ack("a", 1, 7, new);
        assert_eq!(commits(&t), vec![("a".into(), 1, 8)]);
    }

    #[test]
    fn revoke_returns_uncommitted_progress() {
        let t = Tracker::default();
        t.assign("a", 0);
        t.assign("b", 2);
        let g = t.deliver("a", 0, 0).unwrap().generation;
        t.ack("a", 0, 0, g);
        let gb = t.deliver("b", 2, 4).unwrap().generation;
        t.ack("b", 2, 4, gb);
        assert_eq!(commits(&t).len(), 2);
        let g2 = t.deliver("a", 0, 1).unwrap().generation;
        t.ack("a", 0, 1, g2);
        assert_eq!(t.revoke("a", 0), Some(2));
        assert_eq!(t.revoke("b", 2), None, "already committed");
        assert_eq!(t.uncommitted(), 0);
    }

    #[test]
    fn failed_commits_are_retried() {
        let t = Tracker::default();
        t.assign("a", 0);
        let g = t.deliver("a", 0, 0).unwrap().generation;
        t.ack("a", 0, 0, g);
        assert_eq!(commits(&t), vec![("a".into(), 0, 1)]);
        t.commit_failed("a", 0, 1);
        assert_eq!(commits(&t), vec![("a".into(), 0, 1)]);
        assert_eq!(t.uncommitted(), 0);
        t.commit_failed("a", 0, 1);
        assert_eq!(t.uncommitted(), 1);
    }
}

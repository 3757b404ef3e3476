//! What a produced message carries to its delivery report: a reference-counted token (one
//! waiting [`DeliveryReport`](crate::DeliveryReport), a sink), a lane slot, or a detached
//! lane and the message's weight (numbers, no allocation), packed into the one pointer
//! librdkafka keeps per message.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::sync::Arc;

use rdkafka::util::IntoOpaque;

use crate::producer::Token;

/// Bits of a lane ticket that hold the slot (or a detached message's weight); the rest
/// (minus the two tag bits) hold the lane.
pub(crate) const SLOT_BITS: u32 = usize::BITS / 2 - 1;
/// The largest number of lanes (of each kind) a producer may have at once.
pub(crate) const MAX_LANES: usize = 1 << (usize::BITS - 2 - SLOT_BITS);
/// The largest capacity of one lane.
pub(crate) const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// A message's delivery opaque. The low bit tags it: 0 for an `Arc<Token>` pointer (aligned,
/// so its low two bits are 0), 1 for a ticket `lane << SLOT_BITS | slot`, whose kind the
/// second bit tells: 0 a lane slot, 1 a detached lane and the message's weight.
pub(crate) struct Opaque(usize);

/// What an [`Opaque`] stood for.
pub(crate) enum Target {
    Token(Arc<Token>),
    Lane { lane: usize, slot: usize },
    Detached { lane: usize, weight: u32 },
}

impl Opaque {
    pub(crate) fn token(token: Arc<Token>) -> Self {
        Opaque(Arc::into_raw(token) as usize)
    }

    /// `lane < MAX_LANES`, `slot < MAX_SLOTS` (the lane registry and the lane's capacity
    /// keep them so).
    pub(crate) fn lane(lane: usize, slot: usize) -> Self {
        debug_assert!(lane < MAX_LANES && slot < MAX_SLOTS);
        Opaque((((lane << SLOT_BITS) | slot) << 2) | 1)
    }

    /// `lane < MAX_LANES`, `weight < MAX_SLOTS` (the detached registry and
    /// `DetachedSender` keep them so).
    pub(crate) fn detached(lane: usize, weight: u32) -> Self {
        debug_assert!(lane < MAX_LANES && (weight as usize) < MAX_SLOTS);
        Opaque((((lane << SLOT_BITS) | weight as usize) << 2) | 0b11)
    }

    pub(crate) fn target(self) -> Target {
        let v = self.0;
        std::mem::forget(self);
        if v & 1 == 1 {
            let ticket = v >> 2;
            let (lane, slot) = (ticket >> SLOT_BITS, ticket & (MAX_SLOTS - 1));
            if v & 0b10 == 0 {
                Target::Lane { lane, slot }
            } else {
                // `slot < MAX_SLOTS <= 2^31`: it fits.
                Target::Detached {
                    lane,
                    weight: slot as u32,
                }
            }
        } else {
            // SAFETY: an untagged value is only ever made by `Opaque::token` from
            // `Arc::into_raw`, and `target`/`drop` consume it once.
            Target::Token(unsafe { Arc::from_raw(v as *const Token) })
        }
    }
}

impl Drop for Opaque {
    fn drop(&mut self) {
        if self.0 & 1 == 0 {
            // SAFETY: as in `target`; a dropped opaque (a record librdkafka refused) is
            // not used again.
            drop(unsafe { Arc::from_raw(self.0 as *const Token) });
        }
    }
}

impl IntoOpaque for Opaque {
    fn into_ptr(self) -> *mut c_void {
        let v = self.0;
        std::mem::forget(self);
        v as *mut c_void
    }

    unsafe fn from_ptr(ptr: *mut c_void) -> Self {
        Opaque(ptr as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_tickets_round_trip() {
        for (lane, slot) in [(0, 0), (1, 2), (MAX_LANES - 1, MAX_SLOTS - 1), (7, 65535)] {
            match Opaque::lane(lane, slot).target() {
                Target::Lane { lane: l, slot: s } => assert_eq!((l, s), (lane, slot)),
                _ => panic!("a lane ticket came back as something else"),
            }
        }
        for (lane, weight) in [(0, 0), (3, 712), (MAX_LANES - 1, (MAX_SLOTS - 1) as u32)] {
            match Opaque::detached(lane, weight).target() {
                Target::Detached { lane: l, weight: w } => assert_eq!((l, w), (lane, weight)),
                _ => panic!("a detached ticket came back as something else"),
            }
        }
    }
}

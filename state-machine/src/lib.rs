//! `state-machine`: not built yet (see the open issue).

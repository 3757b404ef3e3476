//! `kafka-seq`: not built yet (see the open issue).

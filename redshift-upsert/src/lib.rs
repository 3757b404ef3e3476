//! `redshift-upsert`: not built yet (see the open issue).

//! `report-fetcher`: the state-machine executor driving report downloads (issue 5; not built yet).

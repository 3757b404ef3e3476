//! `pipeline`: the end-to-end job (for now a Baldr round trip).

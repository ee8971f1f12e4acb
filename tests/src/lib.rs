//! Helpers shared by Sigil's cross-crate tests.

//! Sigil on a std host.

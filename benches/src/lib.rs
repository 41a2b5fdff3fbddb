//! Shared helpers for Veza benches and load tools.

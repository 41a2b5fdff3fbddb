//! Veza storage.

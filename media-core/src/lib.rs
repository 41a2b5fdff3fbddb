//! Veza media core: decode → resample → Opus → Ogg pages → zero-copy chunks, and waveforms.

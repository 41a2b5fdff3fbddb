//! Probing: what a source is, read from its headers through the decoder (no full decode).

use crate::decode::Decoder;
use crate::error::Result;
use crate::meta::ProbeInfo;
use crate::source::Source;

/// Reads a source's headers (no full decode) and reports what it is.
pub fn probe<R: Source + 'static>(source: R) -> Result<ProbeInfo> {
    Ok(Decoder::open(source)?.info().clone())
}

//! Typed errors for every media-core operation.

/// Everything that can go wrong while probing, decoding, encoding or muxing.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The input has no bytes at all.
    #[error("empty input")]
    Empty,
    /// The input is not a format or codec that media-core decodes.
    #[error("unsupported media: {0}")]
    Unsupported(String),
    /// The input is damaged or not what its header says.
    #[error("malformed media: {0}")]
    Malformed(String),
    /// The input ends before its own headers say it should.
    #[error("truncated media: {0}")]
    Truncated(String),
    /// A safety limit was hit (channel count, header size, packet size...).
    #[error("limit exceeded: {0}")]
    Limit(String),
    /// The decoded audio is longer than the caller's limit (from the header, or while decoding).
    #[error("too long: {0}")]
    TooLong(String),
    /// The caller's deadline passed before the work was done.
    #[error("processing took longer than its time budget")]
    Deadline,
    /// The caller cancelled the work (e.g. the server is stopping).
    #[error("cancelled")]
    Cancelled,
    /// A caller-supplied option is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// libopus refused an operation.
    #[error("opus codec: {0}")]
    Codec(String),
    /// The resampler refused an operation.
    #[error("resampler: {0}")]
    Resample(String),
    /// Reading the source or writing an output failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, MediaError>;

impl From<symphonia::core::errors::Error> for MediaError {
    fn from(err: symphonia::core::errors::Error) -> Self {
        use symphonia::core::errors::Error as E;
        match err {
            E::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                MediaError::Truncated("unexpected end of stream".into())
            }
            E::IoError(e) => MediaError::Io(e),
            E::DecodeError(msg) => MediaError::Malformed(msg.into()),
            E::SeekError(_) => MediaError::Malformed("seek failed".into()),
            E::Unsupported(msg) => MediaError::Unsupported(msg.into()),
            E::LimitError(msg) => MediaError::Limit(msg.into()),
            E::ResetRequired => MediaError::Unsupported("track layout changes mid-stream".into()),
            other => MediaError::Malformed(other.to_string()),
        }
    }
}

impl From<opus::Error> for MediaError {
    fn from(err: opus::Error) -> Self {
        MediaError::Codec(err.to_string())
    }
}

impl From<ogg::OggReadError> for MediaError {
    fn from(err: ogg::OggReadError) -> Self {
        match err {
            ogg::OggReadError::ReadError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                MediaError::Truncated("ogg page cut short".into())
            }
            ogg::OggReadError::ReadError(e) => MediaError::Io(e),
            other => MediaError::Malformed(other.to_string()),
        }
    }
}

//! Hard limits, checked before any other work is done on received bytes.
//!
//! Every limit is a named constant so that an error can name it, and every number says
//! why it is that number. Changing one is a wire-format change.

/// Largest encoded signed envelope (body bytes + signature + CBOR framing).
/// 64 KiB holds the largest legitimate alert (32 KiB text plus 256 indicators) with room
/// to spare, while bounding what one frame can make a node allocate and hash.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// Longest title, in bytes of UTF-8. A title is a one-line summary for a table.
pub const MAX_TITLE_BYTES: usize = 256;

/// Longest free text, in bytes of UTF-8. Long reports belong in references.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

/// Most indicators on one alert. Bigger IOC dumps should be split or referenced.
pub const MAX_INDICATORS: usize = 256;

/// Longest indicator value in bytes (a URL is the longest legitimate one).
pub const MAX_INDICATOR_BYTES: usize = 2048;

/// Most tags on one alert.
pub const MAX_TAGS: usize = 32;

/// Longest tag in bytes.
pub const MAX_TAG_BYTES: usize = 64;

/// Most explicit recipients. RED alerts go to a handful of named agencies.
pub const MAX_RECIPIENTS: usize = 64;

/// Most references (URLs or document ids).
pub const MAX_REFERENCES: usize = 32;

/// Longest reference in bytes.
pub const MAX_REFERENCE_BYTES: usize = 2048;

/// Most relay hops an alert may travel. Duplicate suppression already stops loops; this
/// bounds how far a CLEAR alert can travel in a badly configured graph. Gossip follows a
/// broadcast tree, whose paths are longer than shortest paths (the simulator measured
/// hop counts of 16 at nodes 3–4 hops from the origin in 100-node graphs), hence 32.
pub const MAX_HOPS: u8 = 32;

/// Largest gossip frame on the wire (an envelope plus frame header), checked on the
/// length prefix before the frame is read or decoded.
pub const MAX_FRAME_BYTES: usize = MAX_ENVELOPE_BYTES + 1024;

/// Most ids in one announce, want or sync page frame: 1024 × ~35 bytes stays far below
/// [`MAX_FRAME_BYTES`].
pub const MAX_IDS_PER_FRAME: usize = 1024;

/// Identifies a limit in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    EnvelopeBytes,
    TitleBytes,
    TextBytes,
    Indicators,
    IndicatorBytes,
    Tags,
    TagBytes,
    Recipients,
    References,
    ReferenceBytes,
    FrameBytes,
    IdsPerFrame,
}

impl Limit {
    /// The constant's name, as written in this module.
    pub fn name(self) -> &'static str {
        match self {
            Limit::EnvelopeBytes => "MAX_ENVELOPE_BYTES",
            Limit::TitleBytes => "MAX_TITLE_BYTES",
            Limit::TextBytes => "MAX_TEXT_BYTES",
            Limit::Indicators => "MAX_INDICATORS",
            Limit::IndicatorBytes => "MAX_INDICATOR_BYTES",
            Limit::Tags => "MAX_TAGS",
            Limit::TagBytes => "MAX_TAG_BYTES",
            Limit::Recipients => "MAX_RECIPIENTS",
            Limit::References => "MAX_REFERENCES",
            Limit::ReferenceBytes => "MAX_REFERENCE_BYTES",
            Limit::FrameBytes => "MAX_FRAME_BYTES",
            Limit::IdsPerFrame => "MAX_IDS_PER_FRAME",
        }
    }

    /// The limit's value.
    pub fn max(self) -> usize {
        match self {
            Limit::EnvelopeBytes => MAX_ENVELOPE_BYTES,
            Limit::TitleBytes => MAX_TITLE_BYTES,
            Limit::TextBytes => MAX_TEXT_BYTES,
            Limit::Indicators => MAX_INDICATORS,
            Limit::IndicatorBytes => MAX_INDICATOR_BYTES,
            Limit::Tags => MAX_TAGS,
            Limit::TagBytes => MAX_TAG_BYTES,
            Limit::Recipients => MAX_RECIPIENTS,
            Limit::References => MAX_REFERENCES,
            Limit::ReferenceBytes => MAX_REFERENCE_BYTES,
            Limit::FrameBytes => MAX_FRAME_BYTES,
            Limit::IdsPerFrame => MAX_IDS_PER_FRAME,
        }
    }

    /// Checks `actual` against the limit.
    pub fn check(self, actual: usize) -> Result<(), crate::Error> {
        if actual > self.max() {
            Err(crate::Error::Limit {
                limit: self,
                actual,
            })
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}", self.name(), self.max())
    }
}

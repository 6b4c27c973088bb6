//! The wire crate's limits from the gateway configuration: the codecs take limits as values
//! ([`Limits`], [`MtomLimits`]) and know nothing of the configuration file.

use crate::config::LimitsConfig;
use crate::ihe::mtom::{MtomLimits, root_bytes_for_inline};
use crate::xml::Limits;

/// The XML reader limits of `server.limits`: `maxBodyBytes`, `maxXmlDepth`, `maxXmlElements`
/// (namespace bindings keep their default).
pub fn xml_limits(c: &LimitsConfig) -> Limits {
    Limits {
        max_bytes: usize::try_from(c.max_body_bytes).unwrap_or(usize::MAX),
        max_depth: c.max_xml_depth,
        max_elements: c.max_xml_elements,
        ..Limits::default()
    }
}

/// The MTOM limits of `server.limits`: XML limits as [`xml_limits`]; the root part may hold inline
/// documents up to `maxInlineDocumentBytes` (base64 adds a third, plus 64 KiB for the envelope around
/// them); buffered messages up to `maxBodyBytes`. No budget: the gateway adds its own
/// ([`crate::ihe::mtom::BufferBudget::new`] of `maxBufferedAnswerBytes`), shared by every client it builds.
pub fn mtom_limits(c: &LimitsConfig) -> MtomLimits {
    let body = usize::try_from(c.max_body_bytes).unwrap_or(usize::MAX);
    MtomLimits {
        xml: xml_limits(c),
        max_root_bytes: root_bytes_for_inline(c.max_inline_document_bytes).max(body),
        max_buffered_bytes: body,
        ..MtomLimits::default()
    }
}

//! IHE wire layer: SOAP 1.2 + WS-Addressing envelopes ([`soap`]), and (in the modules beside it) ebRIM 3.0
//! stored queries, XDS.b / XDS-I.b retrieves, MTOM/XOP, and the transforms to and from [`crate::model`].
//!
//! Reading matches namespace URIs, never prefixes, and tolerates what real peers send; writing is
//! canonical and validates against the IHE schemas in `testdata/ihe/schema`.

pub mod soap;
pub mod xua;

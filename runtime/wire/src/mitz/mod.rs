//! The Mitz codecs: what goes over the wire between a gateway and Mitz, read and written, and nothing about
//! what the gateway decides with it (the clients are the gateway's `consent` and `localization` modules).
//!
//! - [`xacml`]: the closed question (XACML 3.0 in a SAML `XACMLAuthzDecisionQuery`) and its answer, tied
//!   to the question.
//! - [`location`]: the open question (IHE XCPD Patient Location Query, ITI-56) and its answer.
//! - [`subscription`]: registration (a FHIR `Subscription` per patient and data holder) and Mitz's answer.
//! - [`notification`]: the consent notifications Mitz pushes to a registered data holder.

pub mod location;
pub mod notification;
pub mod subscription;
pub mod xacml;

//! DSUB, Document Metadata Subscription (IHE ITI TF-1 26, ITI TF-2b 3.52 / 3.53 and the DSUB
//! extensions supplement), on WS-BaseNotification 1.3 (OASIS `wsn/b-2`):
//!
//! - ITI-52 Document Metadata Subscribe: [`Subscribe`] (`wsnt:Subscribe`: `wsnt:ConsumerReference`,
//!   `wsnt:Filter` with a `wsnt:TopicExpression` of the Simple dialect and a `rim:AdhocQuery` naming the
//!   subscription query and its parameters, `wsnt:InitialTerminationTime`) and [`SubscribeResponse`]
//!   (`wsnt:SubscribeResponse`: `wsnt:SubscriptionReference`, `wsnt:CurrentTime`,
//!   `wsnt:TerminationTime`);
//! - ITI-53 Document Metadata Notify: [`Notify`] (`wsnt:Notify`, one `wsnt:NotificationMessage` per
//!   notification, its `wsnt:Message` holding an `lcm:SubmitObjectsRequest` whose
//!   `rim:RegistryObjectList` carries the DocumentEntries as `rim:ExtrinsicObject` for the topic
//!   `ihe:FullDocumentEntry`, ITI TF-2b 3.53.4.1.2).
//!
//! The SOAP actions ([`SUBSCRIBE_ACTION`], [`SUBSCRIBE_RESPONSE_ACTION`], [`NOTIFY_ACTION`]) are the
//! WS-BaseNotification WSDL's, as ITI TF-2b 3.52.4.1.2 / 3.53.4.1.2 and openehealth IPF's DSUB
//! services use them. ITI-53 is one-way: the recipient answers HTTP 202 with no envelope, or a SOAP
//! fault.
//!
//! [`notified_patients`] reads what the gateway needs from a Notify: every DocumentEntry's patient as a
//! BSN (the patientId CX with the BSN assigning authority, [`Bsn::from_cx`]; anything else is an
//! error naming the entry) and the birth date of `sourcePatientInfo` `PID-7` when given.

use crate::ihe::Message;
use crate::ihe::ebrim::ExtrinsicObject;
use crate::ihe::query::AdhocQuery;
use crate::ihe::transform::{document_entry_to_wire, uuids};
use crate::model::{Bsn, DocumentEntry};
use crate::xml::{Elem, Reader, Writer, XmlError, ns};

/// WS-BaseNotification 1.3 namespace (`wsnt`).
pub const WSNT: &str = "http://docs.oasis-open.org/wsn/b-2";
/// `wsa:Action` of ITI-52 Subscribe (WS-BaseNotification WSDL, NotificationProducer).
pub const SUBSCRIBE_ACTION: &str =
    "http://docs.oasis-open.org/wsn/bw-2/NotificationProducer/SubscribeRequest";
/// `wsa:Action` of the ITI-52 SubscribeResponse.
pub const SUBSCRIBE_RESPONSE_ACTION: &str =
    "http://docs.oasis-open.org/wsn/bw-2/NotificationProducer/SubscribeResponse";
/// `wsa:Action` of ITI-53 Notify (WS-BaseNotification WSDL, NotificationConsumer).
pub const NOTIFY_ACTION: &str = "http://docs.oasis-open.org/wsn/bw-2/NotificationConsumer/Notify";
/// The Simple topic expression dialect (WS-Topics 1.3), the one ITI-52 uses.
pub const TOPIC_DIALECT_SIMPLE: &str = "http://docs.oasis-open.org/wsn/t-1/TopicExpression/Simple";
/// Topic: full DocumentEntry metadata in the notification (ITI TF-2b 3.52.5.2.2).
pub const TOPIC_FULL_DOCUMENT_ENTRY: &str = "ihe:FullDocumentEntry";
/// Topic: ObjectRefs only (ITI TF-2b 3.52.5.1.2).
pub const TOPIC_MINIMAL_DOCUMENT_ENTRY: &str = "ihe:MinimalDocumentEntry";
/// Subscription query SubscriptionForDocumentEntry (one patient, `$XDSDocumentEntryPatientId`
/// required; ITI TF-2b 3.52.4.1.3).
pub const QUERY_DOCUMENT_ENTRY: &str = "urn:uuid:aa2332d0-f8fe-11e0-be50-0800200c9a66";
/// Subscription query SubscriptionForPatientIndependentDocumentEntry of the DSUB extensions (every
/// new DocumentEntry, no patient; IPF `QueryType.SUBSCRIPTION_FOR_PATIENT_INDEPENDENT_DOCUMENT_ENTRY`).
pub const QUERY_PATIENT_INDEPENDENT_DOCUMENT_ENTRY: &str =
    "urn:uuid:742790e0-aba6-43d6-9f1f-e43ed9790b79";
/// Most DocumentEntries one Notify may carry (over every NotificationMessage); more is refused as a
/// whole, so a broker cannot make the gateway register an unbounded list on one request.
pub const MAX_NOTIFY_ENTRIES: usize = 1_000;
/// `sourcePatientInfo` slot of a DocumentEntry (ITI TF-3 4.2.3.2.23), `PID-7|YYYYMMDD` among others.
pub const SOURCE_PATIENT_INFO: &str = "sourcePatientInfo";

/// `wsnt:Subscribe` (ITI-52 request).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// `wsnt:ConsumerReference/wsa:Address`: the Notification Recipient's ITI-53 endpoint.
    pub consumer: String,
    /// `wsnt:Filter/wsnt:TopicExpression` text, e.g. [`TOPIC_FULL_DOCUMENT_ENTRY`].
    pub topic: String,
    /// `wsnt:Filter/rim:AdhocQuery`: the subscription query id and its parameters.
    pub query: AdhocQuery,
    /// `wsnt:InitialTerminationTime` (xsd:dateTime text), when asked.
    pub initial_termination_time: Option<String>,
}

impl Subscribe {
    /// A patient-independent subscription for new DocumentEntries of `topic` delivered to `consumer`,
    /// ending at `termination` when given.
    pub fn patient_independent(
        consumer: &str,
        topic: &str,
        termination: Option<jiff::Timestamp>,
    ) -> Subscribe {
        Subscribe {
            consumer: consumer.to_owned(),
            topic: topic.to_owned(),
            query: AdhocQuery {
                id: QUERY_PATIENT_INDEPENDENT_DOCUMENT_ENTRY.to_owned(),
                home: None,
                slots: Vec::new(),
            },
            initial_termination_time: termination.map(|t| t.to_string()),
        }
    }
}

fn wsa_address<'i>(r: &mut Reader<'i>, el: &Elem<'i>) -> Result<Option<String>, XmlError> {
    let mut out = None;
    while let Some(c) = r.child(el)? {
        if c.is(ns::WSA, "Address") {
            out = Some(r.text(&c)?.trim().to_owned());
        }
    }
    Ok(out)
}

fn required(what: &str, v: Option<String>) -> Result<String, XmlError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(XmlError::invalid(what, "missing or empty")),
    }
}

impl Message for Subscribe {
    const ELEMENT: (&'static str, &'static str) = (WSNT, "Subscribe");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        let mut consumer = None;
        let mut topic = None;
        let mut query = None;
        let mut termination = None;
        while let Some(c) = r.child(&el)? {
            if c.is(WSNT, "ConsumerReference") {
                consumer = wsa_address(r, &c)?;
            } else if c.is(WSNT, "Filter") {
                while let Some(f) = r.child(&c)? {
                    if f.is(WSNT, "TopicExpression") {
                        if let Some(d) = f.attr("Dialect")
                            && d.trim() != TOPIC_DIALECT_SIMPLE
                        {
                            return Err(XmlError::invalid(
                                "Subscribe/Filter/TopicExpression/@Dialect",
                                format!("{d} (ITI-52 uses {TOPIC_DIALECT_SIMPLE})"),
                            ));
                        }
                        topic = Some(r.text(&f)?.trim().to_owned());
                    } else if f.is(ns::RIM, "AdhocQuery") {
                        query = Some(AdhocQuery::read(r, &f)?);
                    }
                }
            } else if c.is(WSNT, "InitialTerminationTime") {
                termination = Some(r.text(&c)?.trim().to_owned());
            }
        }
        Ok(Subscribe {
            consumer: required("Subscribe/ConsumerReference/Address", consumer)?,
            topic: required("Subscribe/Filter/TopicExpression", topic)?,
            query: query
                .ok_or_else(|| XmlError::invalid("Subscribe/Filter/AdhocQuery", "missing"))?,
            initial_termination_time: termination,
        })
    }

    fn write_body(&self, w: &mut Writer) {
        w.start("wsnt:Subscribe")
            .attr("xmlns:wsnt", WSNT)
            .attr("xmlns:wsa", ns::WSA)
            .attr("xmlns:rim", ns::RIM);
        w.start("wsnt:ConsumerReference")
            .leaf("wsa:Address", &self.consumer)
            .end();
        w.start("wsnt:Filter");
        w.start("wsnt:TopicExpression")
            .attr("Dialect", TOPIC_DIALECT_SIMPLE)
            .text(&self.topic)
            .end();
        self.query.write(w);
        w.end();
        if let Some(t) = &self.initial_termination_time {
            w.leaf("wsnt:InitialTerminationTime", t);
        }
        w.end();
    }
}

/// `wsnt:SubscribeResponse` (ITI-52 response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeResponse {
    /// `wsnt:SubscriptionReference/wsa:Address`: the subscription (its manager's address), kept to
    /// recognise it in notifications and to unsubscribe.
    pub subscription_reference: String,
    /// `wsnt:CurrentTime`, when given.
    pub current_time: Option<String>,
    /// `wsnt:TerminationTime`, when given: the broker's end of the subscription.
    pub termination_time: Option<String>,
}

impl Message for SubscribeResponse {
    const ELEMENT: (&'static str, &'static str) = (WSNT, "SubscribeResponse");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        let mut reference = None;
        let mut current_time = None;
        let mut termination_time = None;
        while let Some(c) = r.child(&el)? {
            if c.is(WSNT, "SubscriptionReference") {
                reference = wsa_address(r, &c)?;
            } else if c.is(WSNT, "CurrentTime") {
                current_time = Some(r.text(&c)?.trim().to_owned());
            } else if c.is(WSNT, "TerminationTime") {
                termination_time = Some(r.text(&c)?.trim().to_owned());
            }
        }
        Ok(SubscribeResponse {
            subscription_reference: required(
                "SubscribeResponse/SubscriptionReference/Address",
                reference,
            )?,
            current_time,
            termination_time,
        })
    }

    fn write_body(&self, w: &mut Writer) {
        w.start("wsnt:SubscribeResponse")
            .attr("xmlns:wsnt", WSNT)
            .attr("xmlns:wsa", ns::WSA);
        w.start("wsnt:SubscriptionReference")
            .leaf("wsa:Address", &self.subscription_reference)
            .end();
        if let Some(t) = &self.current_time {
            w.leaf("wsnt:CurrentTime", t);
        }
        if let Some(t) = &self.termination_time {
            w.leaf("wsnt:TerminationTime", t);
        }
        w.end();
    }
}

/// One `wsnt:NotificationMessage` of a [`Notify`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NotificationMessage {
    /// `wsnt:SubscriptionReference/wsa:Address`, when given.
    pub subscription_reference: Option<String>,
    /// `wsnt:Topic` text (e.g. [`TOPIC_FULL_DOCUMENT_ENTRY`]).
    pub topic: String,
    /// `wsnt:ProducerReference/wsa:Address`, when given.
    pub producer_reference: Option<String>,
    /// The DocumentEntries of `wsnt:Message/lcm:SubmitObjectsRequest/rim:RegistryObjectList`.
    pub entries: Vec<ExtrinsicObject>,
    /// How many other registry objects the list held (ObjectRefs of a minimal notification,
    /// SubmissionSets, Associations): not read, counted so that a minimal notification is not taken
    /// for an empty one.
    pub other_objects: usize,
}

/// `wsnt:Notify` (ITI-53 request; one-way).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notify {
    /// The notifications, in order.
    pub messages: Vec<NotificationMessage>,
}

impl Notify {
    /// A Notify of one full-DocumentEntry notification of `entries` for `subscription`.
    pub fn full(subscription: &str, producer: Option<&str>, entries: &[DocumentEntry]) -> Notify {
        Notify {
            messages: vec![NotificationMessage {
                subscription_reference: Some(subscription.to_owned()),
                topic: TOPIC_FULL_DOCUMENT_ENTRY.to_owned(),
                producer_reference: producer.map(str::to_owned),
                entries: entries.iter().map(document_entry_to_wire).collect(),
                other_objects: 0,
            }],
        }
    }
}

fn read_object_list<'i>(
    r: &mut Reader<'i>,
    list: &Elem<'i>,
    m: &mut NotificationMessage,
    total: &mut usize,
) -> Result<(), XmlError> {
    while let Some(o) = r.child(list)? {
        if o.is(ns::RIM, "ExtrinsicObject") {
            *total += 1;
            if *total > MAX_NOTIFY_ENTRIES {
                return Err(XmlError::invalid(
                    "Notify",
                    format!("more than {MAX_NOTIFY_ENTRIES} DocumentEntries in one Notify"),
                ));
            }
            m.entries.push(ExtrinsicObject::read(r, &o)?);
        } else {
            m.other_objects += 1;
        }
    }
    Ok(())
}

impl Message for Notify {
    const ELEMENT: (&'static str, &'static str) = (WSNT, "Notify");

    fn read_body<'i>(r: &mut Reader<'i>, el: Elem<'i>) -> Result<Self, XmlError> {
        let mut messages = Vec::new();
        let mut total = 0usize;
        while let Some(c) = r.child(&el)? {
            if !c.is(WSNT, "NotificationMessage") {
                continue;
            }
            let mut m = NotificationMessage::default();
            let mut topic = None;
            while let Some(p) = r.child(&c)? {
                if p.is(WSNT, "SubscriptionReference") {
                    m.subscription_reference = wsa_address(r, &p)?;
                } else if p.is(WSNT, "ProducerReference") {
                    m.producer_reference = wsa_address(r, &p)?;
                } else if p.is(WSNT, "Topic") {
                    topic = Some(r.text(&p)?.trim().to_owned());
                } else if p.is(WSNT, "Message") {
                    while let Some(s) = r.child(&p)? {
                        if !s.is(ns::LCM, "SubmitObjectsRequest") {
                            return Err(XmlError::invalid(
                                "Notify/NotificationMessage/Message",
                                format!("{} (expected lcm:SubmitObjectsRequest)", s.qualified()),
                            ));
                        }
                        while let Some(l) = r.child(&s)? {
                            if l.is(ns::RIM, "RegistryObjectList") {
                                read_object_list(r, &l, &mut m, &mut total)?;
                            }
                        }
                    }
                }
            }
            m.topic = required("Notify/NotificationMessage/Topic", topic)?;
            messages.push(m);
        }
        if messages.is_empty() {
            return Err(XmlError::invalid("Notify", "no wsnt:NotificationMessage"));
        }
        Ok(Notify { messages })
    }

    fn write_body(&self, w: &mut Writer) {
        w.start("wsnt:Notify")
            .attr("xmlns:wsnt", WSNT)
            .attr("xmlns:wsa", ns::WSA)
            .attr("xmlns:lcm", ns::LCM)
            .attr("xmlns:rim", ns::RIM);
        for m in &self.messages {
            w.start("wsnt:NotificationMessage");
            if let Some(s) = &m.subscription_reference {
                w.start("wsnt:SubscriptionReference")
                    .leaf("wsa:Address", s)
                    .end();
            }
            w.start("wsnt:Topic")
                .attr("Dialect", TOPIC_DIALECT_SIMPLE)
                .text(&m.topic)
                .end();
            if let Some(p) = &m.producer_reference {
                w.start("wsnt:ProducerReference")
                    .leaf("wsa:Address", p)
                    .end();
            }
            w.start("wsnt:Message")
                .start("lcm:SubmitObjectsRequest")
                .start("rim:RegistryObjectList");
            for e in &m.entries {
                e.write(w);
            }
            w.end().end().end();
            w.end();
        }
        w.end();
    }
}

/// A patient a Notify names: the BSN of a DocumentEntry's patientId and, when its
/// `sourcePatientInfo` gives one (`PID-7|YYYYMMDD`), the birth date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifiedPatient {
    /// The patient.
    pub bsn: Bsn,
    /// `PID-7` of `sourcePatientInfo`, when given and a valid date.
    pub birth_date: Option<jiff::civil::Date>,
    /// The entryUUIDs of the DocumentEntries of this patient in the Notify.
    pub entries: Vec<String>,
}

/// Why a Notify names no patient the gateway will register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// A notification of another topic than `ihe:FullDocumentEntry` (a minimal one names no patient).
    #[error("notification topic {0:?} is not {TOPIC_FULL_DOCUMENT_ENTRY}")]
    Topic(String),
    /// A DocumentEntry without a patientId ExternalIdentifier.
    #[error("DocumentEntry {entry:?} has no patientId")]
    NoPatient {
        /// Its entryUUID.
        entry: String,
    },
    /// A DocumentEntry whose patientId is not a BSN CX (`<bsn>^^^&2.16.840.1.113883.2.4.6.3&ISO`).
    #[error(
        "DocumentEntry {entry:?}: patientId {patient_id:?} is not a BSN (CX with assigning authority {})",
        Bsn::OID
    )]
    NotBsn {
        /// Its entryUUID.
        entry: String,
        /// The patientId as sent (cut at 64 bytes).
        patient_id: String,
    },
    /// No DocumentEntry at all.
    #[error("the Notify carries no DocumentEntry")]
    Empty,
}

/// `PID-7|YYYYMMDD...` of a `sourcePatientInfo` slot: the birth date, when it is a valid date in the
/// past. Anything else is ignored (the birth date is optional for a registration).
fn birth_date(eo: &ExtrinsicObject) -> Option<jiff::civil::Date> {
    let slot = eo.object.slot(SOURCE_PATIENT_INFO)?;
    let v = slot
        .values
        .iter()
        .find_map(|v| v.trim().strip_prefix("PID-7|"))?;
    let d = v.get(..8)?;
    if !d.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = jiff::civil::Date::new(
        d[..4].parse().ok()?,
        d[4..6].parse().ok()?,
        d[6..8].parse().ok()?,
    )
    .ok()?;
    (date <= jiff::Zoned::now().date()).then_some(date)
}

/// The patients of `n`, in first-seen order, one per BSN (several DocumentEntries of one patient are
/// one registration).
///
/// Errors: the first rule broken, naming the entry: a topic other than full DocumentEntry, an entry
/// without patientId or whose patientId is not a BSN CX, or no entry at all. One bad entry refuses the
/// whole Notify: the broker re-sends it, and nothing of it is half-done on purpose.
pub fn notified_patients(n: &Notify) -> Result<Vec<NotifiedPatient>, NotifyError> {
    let mut out: Vec<NotifiedPatient> = Vec::new();
    for m in &n.messages {
        if m.topic != TOPIC_FULL_DOCUMENT_ENTRY {
            return Err(NotifyError::Topic(
                crate::ihe::soap::cut(&m.topic, 64).to_owned(),
            ));
        }
        for eo in &m.entries {
            let entry = crate::ihe::soap::cut(&eo.object.id, 128).to_owned();
            let Some(cx) = eo.object.external_id(uuids::PATIENT_ID) else {
                return Err(NotifyError::NoPatient { entry });
            };
            let Some(bsn) = Bsn::from_cx(cx.trim()) else {
                return Err(NotifyError::NotBsn {
                    entry,
                    patient_id: crate::ihe::soap::cut(cx, 64).to_owned(),
                });
            };
            let birth = birth_date(eo);
            match out.iter_mut().find(|p| p.bsn == bsn) {
                Some(p) => {
                    p.entries.push(entry);
                    p.birth_date = p.birth_date.or(birth);
                }
                None => out.push(NotifiedPatient {
                    bsn,
                    birth_date: birth,
                    entries: vec![entry],
                }),
            }
        }
    }
    if out.is_empty() {
        return Err(NotifyError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

//! The registrations the simulator keeps, as Mitz does: one per (patient BSN, data holder URA, provider
//! type, GatewaySystem). The open question is answered from them only, and consent changes are pushed to
//! their channel endpoints.

use crate::model::{Bsn, DataCategory, FacilityType, HomeCommunityId, Ura};

/// The format a subscriber asked notifications in (`Subscription.channel.payload`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationPayload {
    /// `application/fhir+xml`.
    Xml,
    /// `application/fhir+json`.
    Json,
}

impl NotificationPayload {
    /// The MIME type, as in `channel.payload` and the notification's `Content-Type`.
    pub fn mime(self) -> &'static str {
        match self {
            NotificationPayload::Xml => "application/fhir+xml",
            NotificationPayload::Json => "application/fhir+json",
        }
    }
}

/// One registration of a data holder for a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// `sim-N` for a registration made by a Subscription, `seed-N` for one seeded from the consents
    /// file's `locations`.
    pub id: String,
    /// The patient (criteria `patientid`).
    pub patient: Bsn,
    /// The data holder (criteria `providerid`).
    pub holder: Ura,
    /// The data holder's facility type (criteria `providertype`); `None` for a seeded registration.
    pub provider_type: Option<FacilityType>,
    /// The holder's community (extension `GatewaySystem`), listed by the open question.
    pub home_community_id: HomeCommunityId,
    /// The source system (extension `SourceSystem`), listed as the location's SourceId.
    pub source_id: Option<String>,
    /// The category whose consent decides whether the open question lists this location (seeded
    /// registrations only; `None`: only rules without a category count).
    pub category: Option<DataCategory>,
    /// Where notifications go (`channel.endpoint`, always `https://` without userinfo); `None` for a
    /// seeded registration, which gets no notifications.
    pub endpoint: Option<String>,
    /// The notification format.
    pub payload: NotificationPayload,
}

impl Registration {
    fn same_key(&self, other: &Registration) -> bool {
        self.patient == other.patient
            && self.holder == other.holder
            && self.provider_type == other.provider_type
            && self.home_community_id == other.home_community_id
    }
}

/// The registrations, in the order they were made.
#[derive(Debug, Default)]
pub(super) struct Registry {
    items: Vec<Registration>,
}

impl Registry {
    /// Adds `r` unless a registration with the same key exists; `Err` is the existing one's id.
    pub(super) fn add(&mut self, r: Registration) -> Result<(), String> {
        if let Some(existing) = self.items.iter().find(|x| x.same_key(&r)) {
            return Err(existing.id.clone());
        }
        self.items.push(r);
        Ok(())
    }

    /// The existing registration with the key of `r`, if any.
    pub(super) fn existing(&self, r: &Registration) -> Option<&Registration> {
        self.items.iter().find(|x| x.same_key(r))
    }

    /// Every registration, in order.
    pub(super) fn all(&self) -> &[Registration] {
        &self.items
    }
}

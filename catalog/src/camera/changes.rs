//! The camera catalogue's change feed: every registration, update, restoration, curation,
//! deletion and change of status or NOTIFY state, in order, so that an upper platform (or a
//! WVP-style consumer) keeps an exact copy of the registry without reading it again.
//!
//! A change is written in the transaction that makes it, with what a consumer needs to apply
//! it on its own: the channel's shown values for the changes of its values, its liveness
//! evidence for the status. The status a change shows is computed from that evidence at the
//! change's time, by the rule `GET /api/v1/cameras` uses; the one change of status that no
//! write makes (keepalives stopping) is written by the sweep every read of the feed runs
//! first. Keepalives that change no status are not changes: `last_keepalive_at` is the one
//! field of a listed channel the feed does not carry.

use serde_json::{Value, json};

use super::status::{LiveState, Notified, Status};
use super::{CameraRecord, CameraScope, ChannelFields};

/// What happened to a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Registered,
    Updated,
    /// A deleted channel registered again.
    Restored,
    /// Its curated overrides were replaced.
    Curated,
    /// Its status or NOTIFY state changed.
    Status,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Registered => "registered",
            ChangeKind::Updated => "updated",
            ChangeKind::Restored => "restored",
            ChangeKind::Curated => "curated",
            ChangeKind::Status => "status",
            ChangeKind::Deleted => "deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "registered" => ChangeKind::Registered,
            "updated" => ChangeKind::Updated,
            "restored" => ChangeKind::Restored,
            "curated" => ChangeKind::Curated,
            "status" => ChangeKind::Status,
            "deleted" => ChangeKind::Deleted,
            _ => return None,
        })
    }

    /// Whether the change carries the channel's whole record.
    pub fn carries_record(self) -> bool {
        matches!(
            self,
            ChangeKind::Registered
                | ChangeKind::Updated
                | ChangeKind::Restored
                | ChangeKind::Curated
        )
    }
}

impl From<super::Registered> for ChangeKind {
    fn from(outcome: super::Registered) -> Self {
        match outcome {
            super::Registered::Created => ChangeKind::Registered,
            super::Registered::Updated => ChangeKind::Updated,
            super::Registered::Restored => ChangeKind::Restored,
        }
    }
}

/// A channel's shown values as a change carries them.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedValues {
    pub fields: ChannelFields,
    pub complete: bool,
    pub registered_at: i64,
    pub updated_at: i64,
}

/// One change, as a store writes it and reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraChange {
    pub camera_id: String,
    /// When the hub recorded it (Unix ms); the status shown is the one at this time.
    pub at: i64,
    pub kind: ChangeKind,
    /// The id's current county-level region.
    pub region_code: String,
    /// The civil code shown at the time, and for a change of it, the one before.
    pub civil_code: Option<String>,
    pub civil_code_before: Option<String>,
    /// For [`ChangeKind::carries_record`] changes.
    pub values: Option<ChangedValues>,
    /// The liveness evidence after the change (`notified_at` is not kept).
    pub live: LiveState,
    /// What changed the status (the last transition's cause), for status changes.
    pub cause: Option<String>,
}

/// A change with its place in the feed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChange {
    pub seq: i64,
    pub change: CameraChange,
}

/// A page of the feed, the last place retention deleted (a cursor before it missed
/// changes) and the newest place (a cursor past it is not this feed's).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChangePage {
    pub changes: Vec<StoredChange>,
    pub purged_through: i64,
    pub head: i64,
}

impl CameraChange {
    /// A status (or NOTIFY state) change of `id` after its evidence became `live`.
    pub fn status(
        id: &str,
        at: i64,
        civil_code: Option<String>,
        live: LiveState,
        cause: Option<&str>,
    ) -> Result<Self, super::FieldError> {
        Ok(CameraChange {
            camera_id: id.to_string(),
            at,
            kind: ChangeKind::Status,
            region_code: region_of(id)?,
            civil_code,
            civil_code_before: None,
            values: None,
            live,
            cause: cause.map(str::to_string),
        })
    }

    /// The deletion of `id`.
    pub fn deleted(
        id: &str,
        at: i64,
        civil_code: Option<String>,
    ) -> Result<Self, super::FieldError> {
        Ok(CameraChange {
            camera_id: id.to_string(),
            at,
            kind: ChangeKind::Deleted,
            region_code: region_of(id)?,
            civil_code,
            civil_code_before: None,
            values: None,
            live: LiveState::default(),
            cause: None,
        })
    }

    /// A change of `record`'s values (its `live` is the evidence at the change).
    pub fn values(
        kind: ChangeKind,
        record: CameraRecord,
        at: i64,
        civil_code_before: Option<String>,
    ) -> Self {
        let civil_code = record.fields.civil_code.clone();
        CameraChange {
            camera_id: record.id.id.clone(),
            at,
            kind,
            region_code: record.id.current_region_code.to_string(),
            civil_code_before: civil_code_before
                .filter(|before| Some(before) != civil_code.as_ref()),
            civil_code,
            values: Some(ChangedValues {
                fields: record.fields,
                complete: record.complete,
                registered_at: record.registered_at,
                updated_at: record.updated_at,
            }),
            live: record.live,
            cause: None,
        }
    }
}

fn region_of(id: &str) -> Result<String, super::FieldError> {
    Ok(crate::gb28181::parse(id)?.current_region_code.to_string())
}

/// Whether a status change is one a consumer must hear of: a transition was appended, or
/// the NOTIFY state it shows changed.
pub fn status_changed(before: &LiveState, after: &LiveState, transitions: usize) -> bool {
    transitions > 0 || before.notified != after.notified
}

/// How a change reaches a consumer inside `scope`: as it is, as the deletion of a channel
/// that left the scope (its civil code moved out of a town), or not at all.
pub enum Seen {
    AsIs,
    LeftScope,
    Hidden,
}

impl CameraScope {
    /// Whether a channel of region `region_code` with civil code `civil_code` lies inside.
    pub fn contains_codes(&self, region_code: &str, civil_code: Option<&str>) -> bool {
        let (value, ranges) = match self {
            CameraScope::Region(ranges) => (Some(region_code), ranges),
            CameraScope::CivilCode(ranges) => (civil_code, ranges),
        };
        value.is_some_and(|value| {
            ranges
                .iter()
                .any(|(low, high)| value >= low.as_str() && value < high.as_str())
        })
    }

    /// How `change` reaches a consumer inside this scope.
    pub fn sees(&self, change: &CameraChange) -> Seen {
        if self.contains_codes(&change.region_code, change.civil_code.as_deref()) {
            Seen::AsIs
        } else if change
            .civil_code_before
            .as_deref()
            .is_some_and(|before| self.contains_codes(&change.region_code, Some(before)))
        {
            Seen::LeftScope
        } else {
            Seen::Hidden
        }
    }
}

/// A change as the feed shows it. `camera_json` renders a record with its status and
/// since when (the same function `GET /api/v1/cameras` uses).
pub fn change_json(
    stored: &StoredChange,
    shown: Seen,
    liveness: super::status::Liveness,
    camera_json: impl Fn(&CameraRecord, Status, Option<i64>) -> Value,
) -> Option<Value> {
    let change = &stored.change;
    let mut answer = json!({
        "seq": stored.seq,
        "id": change.camera_id,
        "at": super::registry::time_text(change.at),
    });
    let kind = match shown {
        Seen::Hidden => return None,
        Seen::LeftScope => {
            answer["left_scope"] = json!(true);
            ChangeKind::Deleted
        }
        Seen::AsIs => change.kind,
    };
    answer["change"] = json!(kind.as_str());
    let (status, since) = change.live.status_and_since(change.at, liveness);
    match (kind, &change.values) {
        (ChangeKind::Deleted, _) => {}
        (ChangeKind::Status, _) => {
            answer["status"] = json!(status.as_str());
            answer["status_since"] = json!(since.and_then(super::registry::time_text));
            answer["notified"] = json!(change.live.notified.map(Notified::as_str));
            answer["cause"] = json!(change.cause);
        }
        (_, Some(values)) => {
            let device = crate::gb28181::parse(&change.camera_id).ok()?;
            let record = CameraRecord {
                id: device,
                fields: values.fields.clone(),
                complete: values.complete,
                live: change.live,
                registered_at: values.registered_at,
                updated_at: values.updated_at,
            };
            answer["camera"] = camera_json(&record, status, since);
        }
        (_, None) => return None,
    }
    Some(answer)
}

//! The registry's decisions that do not depend on the database: who may register, curate
//! or signal a channel, what a NOTIFY event does to a stored one, and whether an imported
//! history continues the recorded one. Both catalog stores (`sqlite/cameras.rs`,
//! `postgres/cameras.rs`) read what they need, ask here, and write what is decided.

use crate::camera::status::{Event, Notified, Status};
use crate::camera::{ChannelFields, FieldError, ImportedHistory, Registered};
use crate::error::{CatalogError, Result};

/// A channel as stored, as far as these rules look at it.
#[derive(Clone, Copy)]
pub struct StoredChannel<'a> {
    pub department: Option<&'a str>,
    pub deleted: bool,
    pub reported: &'a ChannelFields,
}

/// The stored state of a channel a write needs (both stores read the same columns).
pub(crate) struct Existing {
    pub department: Option<String>,
    pub reported: ChannelFields,
    pub curated: ChannelFields,
    pub deleted: bool,
    pub live: crate::camera::status::LiveState,
    pub registered_at: i64,
}

impl Existing {
    pub fn rules(&self) -> StoredChannel<'_> {
        StoredChannel {
            department: self.department.as_deref(),
            deleted: self.deleted,
            reported: &self.reported,
        }
    }

    /// Whether a registration of `fields` would change nothing: platforms send their whole
    /// catalogue again and again, and the same values change nothing (not even
    /// `updated_at`), so the change feed hears of nothing.
    pub fn reported_already(&self, fields: &ChannelFields) -> bool {
        !self.deleted && self.reported == *fields
    }

    /// The change of this channel's values just written (`shown`, at `at`), recorded by
    /// the hub at `recorded_at`; `before` is `None` for a new channel.
    pub fn values_change(
        before: Option<&Existing>,
        kind: crate::camera::changes::ChangeKind,
        id: crate::gb28181::DeviceId,
        shown: ChannelFields,
        (at, recorded_at): (i64, i64),
    ) -> crate::camera::changes::CameraChange {
        // A channel whose civil code changed may have left a town's scope.
        let civil_before = before
            .filter(|old| !old.deleted)
            .and_then(|old| old.curated.over(&old.reported).civil_code);
        let record = crate::camera::CameraRecord {
            id,
            complete: shown.is_complete(),
            fields: shown,
            live: before.map(|old| old.live).unwrap_or_default(),
            registered_at: before.map_or(at, |old| old.registered_at),
            updated_at: at,
        };
        crate::camera::changes::CameraChange::values(kind, record, recorded_at, civil_before)
    }
}

pub fn not_yours(id: &str, owner: Option<&str>, acting_for: &str) -> FieldError {
    FieldError::forbidden(
        "id",
        format!(
            "channel {id} belongs to department {}; {acting_for} may change only its own \
             channels (an admin may change any)",
            owner.unwrap_or("(none)")
        ),
    )
}

/// Whether a caller acting for `acting_for` (`None`: an admin) may send an alarm or a
/// position as `id`, whose owner is `owner` (`None`: not registered; `Some(None)`:
/// registered without a department).
pub fn may_report(
    id: &str,
    owner: Option<Option<&str>>,
    acting_for: Option<&str>,
) -> Result<(), FieldError> {
    match (owner, acting_for) {
        (None, _) => Err(unknown_camera(id)),
        (Some(owner), Some(acting)) if owner != Some(acting) => Err(not_yours(id, owner, acting)),
        _ => Ok(()),
    }
}

pub fn unknown_camera(id: &str) -> FieldError {
    FieldError::new(
        "id",
        format!(
            "{id} is not a registered channel or device; register it first (PUT /api/v1/cameras/{id})"
        ),
    )
}

/// A department registers its own channels: an unnamed owner becomes the caller's, another
/// department's name is refused. `acting_for` is `None` for an admin.
pub fn claim_department(
    fields: &mut ChannelFields,
    acting_for: Option<&str>,
) -> Result<(), FieldError> {
    let Some(acting) = acting_for else {
        return Ok(());
    };
    match fields.department.as_deref() {
        None => fields.department = Some(acting.to_string()),
        Some(named) if named != acting => {
            return Err(FieldError::forbidden(
                "department",
                format!("{acting} registers its own channels; {named}'s are registered by {named}"),
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

/// What registering `id` over what is stored means: created, updated or restored, or
/// refused when another department owns it (a deleted channel may be taken over).
pub fn registration(
    id: &str,
    stored: Option<StoredChannel<'_>>,
    acting_for: Option<&str>,
) -> Result<Registered, FieldError> {
    let Some(old) = stored else {
        return Ok(Registered::Created);
    };
    if let Some(acting) = acting_for
        && old.department != Some(acting)
        && !old.deleted
    {
        return Err(not_yours(id, old.department, acting));
    }
    Ok(if old.deleted {
        Registered::Restored
    } else {
        Registered::Updated
    })
}

/// Whether the caller may replace a channel's curated values with `curated`.
pub fn check_curation(
    id: &str,
    owner: Option<&str>,
    curated: &ChannelFields,
    acting_for: Option<&str>,
) -> Result<()> {
    let Some(acting) = acting_for else {
        return Ok(());
    };
    if owner != Some(acting) {
        let err = not_yours(id, owner, acting);
        return Err(CatalogError::invalid(err.field, err.message));
    }
    if let Some(named) = curated.department.as_deref()
        && named != acting
    {
        return Err(CatalogError::invalid(
            "department",
            format!("only an admin may hand a channel to another department ({named})"),
        ));
    }
    Ok(())
}

/// What a catalog NOTIFY event does to a channel.
#[derive(Debug, PartialEq)]
pub enum EventStep {
    /// Register (or re-register) the channel with these reported values.
    Register(Box<ChannelFields>),
    /// Mark it deleted (its status goes with it).
    Delete,
    /// Record the status the event reports.
    Notify(Notified),
    /// Nothing to write: the item's answer (channels marked, or why it was refused).
    Answer(Result<usize, FieldError>),
}

/// Decides what `event` (with the channel's new values, if it carries them) does to the
/// channel `id` as stored.
pub fn plan_event(
    id: &str,
    event: Event,
    stored: Option<StoredChannel<'_>>,
    fields: Option<Box<ChannelFields>>,
    acting_for: Option<&str>,
) -> EventStep {
    let registered = stored.filter(|old| !old.deleted);
    if let (Some(acting), Some(old)) = (acting_for, registered)
        && old.department != Some(acting)
    {
        return EventStep::Answer(Err(not_yours(id, old.department, acting)));
    }
    match (event, registered, fields) {
        (Event::Add | Event::Update, _, Some(fields)) => EventStep::Register(fields),
        // ADD of a channel deleted earlier brings it back with its known values.
        (Event::Add, None, None) => match stored {
            Some(old) => match acting_for {
                Some(acting) if old.department != Some(acting) => {
                    EventStep::Answer(Err(not_yours(id, old.department, acting)))
                }
                _ => EventStep::Register(Box::new(old.reported.clone())),
            },
            None => EventStep::Answer(Err(FieldError::new(
                "channel",
                format!(
                    "{id} is not registered; an ADD of a new channel carries its fields \
                     (\"channel\": {{\"name\": ...}})"
                ),
            ))),
        },
        (Event::Add, Some(_), None) => EventStep::Answer(Ok(0)),
        (Event::Update, Some(_), None) => EventStep::Answer(Err(FieldError::new(
            "channel",
            "UPDATE carries the channel's new fields (\"channel\": {...})",
        ))),
        (_, None, _) => EventStep::Answer(Err(unknown_camera(id))),
        (Event::Del, Some(_), _) => EventStep::Delete,
        (event, Some(_), _) => match event.notified() {
            Some(notified) => EventStep::Notify(notified),
            None => EventStep::Answer(Err(FieldError::new("event", "not a status event"))),
        },
    }
}

impl ImportedHistory {
    /// Checks that the history continues the channel's recorded one (`recorded` since
    /// `since`) transition by transition and ends where its evidence says.
    pub fn check_continues(&self, recorded: Option<Status>, since: Option<i64>) -> Result<()> {
        let id = &self.id;
        let mut status = recorded.unwrap_or(Status::Unknown);
        let mut since = since.unwrap_or(i64::MIN);
        for transition in &self.transitions {
            if transition.from != status
                || transition.at < since
                || transition.from == transition.to
            {
                return Err(CatalogError::invalid(
                    "transitions",
                    format!(
                        "{id}: {:?} at {} does not continue the history ({status:?} since {since})",
                        transition.to, transition.at
                    ),
                ));
            }
            status = transition.to;
            since = transition.at;
        }
        if self.live.recorded.unwrap_or(Status::Unknown) != status {
            return Err(CatalogError::invalid(
                "live",
                format!("{id}: the evidence's recorded status is not the history's last"),
            ));
        }
        Ok(())
    }
}

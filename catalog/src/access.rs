//! Every access rule of the hub in one place: who may see a dataset, read it (and how
//! masked), push to it, act for a department, and hold a role for an action.
//!
//! Front doors and services ask here; none decides access on its own.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use crate::Catalog;
use crate::error::{CatalogError, Result};
use crate::model::{Dataset, DatasetName, Principal, Role, Sharing};
use crate::sharing::{Grant, RowLimit};

impl Principal {
    /// Whether this principal may act for `department` as owner (admins may act for all).
    pub fn acts_for(&self, department: &str) -> bool {
        self.role == Role::Admin || self.department == department
    }

    /// Whether this principal may know that a dataset exists: its owner and admins always;
    /// everybody for shared (unconditional or conditional) datasets, so that departments
    /// can browse what they may apply for. A `none` dataset is invisible to everyone else.
    /// What the principal may read of it is [`crate::sharing::access`].
    pub fn may_see(&self, dataset: &Dataset) -> bool {
        self.acts_for(&dataset.owner) || dataset.sharing != Sharing::None
    }
}

/// Looks a dataset up for `principal`; one it may not see answers exactly like a missing
/// one, so that its existence is not revealed.
pub async fn visible_dataset(
    catalog: &Catalog,
    principal: &Principal,
    name: &str,
) -> Result<Dataset> {
    let parsed = DatasetName::parse(name)?;
    match catalog.dataset(&parsed).await? {
        Some(dataset) if principal.may_see(&dataset) => Ok(dataset),
        _ => Err(CatalogError::NotFound {
            what: "dataset",
            name: name.to_string(),
        }),
    }
}

/// Who runs SQL (HTTP, PostgreSQL, Flight SQL): analysts and admins. Producers push,
/// dashboards read endpoints.
pub const SQL_ROLES: &[Role] = &[Role::Admin, Role::Analyst];
/// Who applies for datasets, answers requests to its department and revokes its grants.
pub const SHARING_ROLES: &[Role] = &[Role::Admin, Role::Producer, Role::Analyst];
/// Who reads the audit log and manages tokens.
pub const ADMIN_ROLES: &[Role] = &[Role::Admin];

/// What `role` may do, in the words clients show it by (`GET /api/v1/me`), made from the
/// same role lists the checks use: `sql`, `catalogue`, `decide`, `cameras` (the map reads
/// `hub.cameras` by SQL), `kpi` (every role: dashboard endpoints and camera statistics),
/// `audit`, `tokens`.
pub fn capabilities(role: Role) -> Vec<&'static str> {
    [
        ("sql", SQL_ROLES),
        ("catalogue", SHARING_ROLES),
        ("decide", SHARING_ROLES),
        ("cameras", SQL_ROLES),
        (
            "kpi",
            &[Role::Admin, Role::Producer, Role::Analyst, Role::Dashboard][..],
        ),
        ("audit", ADMIN_ROLES),
        ("tokens", ADMIN_ROLES),
    ]
    .into_iter()
    .filter(|(_, roles)| roles.contains(&role))
    .map(|(name, _)| name)
    .collect()
}

/// Refuses `principal` unless it holds one of `roles`; `doing` says what for.
pub fn require_role(principal: &Principal, roles: &[Role], doing: &str) -> Result<()> {
    if roles.contains(&principal.role) {
        Ok(())
    } else {
        let allowed: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(CatalogError::Forbidden(format!(
            "{doing} needs the {} role; this token has the {} role",
            allowed.join(" or "),
            principal.role
        )))
    }
}

/// Why a principal may not push to a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushRefusal {
    /// The dataset must look as if it did not exist.
    Hidden,
    /// It may know of the dataset but not write to it; the message says who may.
    Forbidden(String),
}

/// Whether `principal` may push rows to `dataset`: admins, and producers of its owner.
pub fn may_push(principal: &Principal, dataset: &Dataset) -> std::result::Result<(), PushRefusal> {
    if !principal.may_see(dataset) {
        return Err(PushRefusal::Hidden);
    }
    match principal.role {
        Role::Admin => Ok(()),
        Role::Producer if principal.department == dataset.owner => Ok(()),
        Role::Producer => Err(PushRefusal::Forbidden(format!(
            "dataset {} belongs to department {}; producers of {} may push only to their own \
             department's datasets",
            dataset.name, dataset.owner, principal.department
        ))),
        role => Err(PushRefusal::Forbidden(format!(
            "the {role} role cannot write; pushes need a producer token of department {}",
            dataset.owner
        ))),
    }
}

/// Whether `principal` may rewrite `dataset`'s files (`doing`: "compacting", "deleting
/// rows of"): the same people as pushes, admins and producers of its owner.
pub fn may_maintain(
    principal: &Principal,
    dataset: &Dataset,
    doing: &str,
) -> std::result::Result<(), PushRefusal> {
    match may_push(principal, dataset) {
        Err(PushRefusal::Forbidden(_)) => Err(PushRefusal::Forbidden(format!(
            "{doing} dataset {} needs an admin token or a producer token of its owner, \
             department {}",
            dataset.name, dataset.owner
        ))),
        other => other,
    }
}

/// Whether `principal` may register a dataset named in `department`.
pub fn may_register(principal: &Principal, department: &str) -> Result<()> {
    require_role(
        principal,
        &[Role::Admin, Role::Producer],
        "registering a dataset",
    )?;
    if principal.acts_for(department) {
        Ok(())
    } else {
        Err(CatalogError::Forbidden(format!(
            "a producer of {} can register datasets only in its own department, not in {department}",
            principal.department
        )))
    }
}

/// What one principal may do with one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Owner or admin: every column, unmasked.
    Full,
    /// A reader: `columns` (all when `None`); sensitive columns masked except `unmasked`.
    /// `trusted` readers hold a grant and get the milder masks of the trusted tier.
    /// `rows`: the rows its grants allow (any of the limits), `None` for all of them.
    Read {
        columns: Option<BTreeSet<String>>,
        unmasked: BTreeSet<String>,
        trusted: bool,
        rows: Option<Vec<RowLimit>>,
    },
    /// Visible in the shared catalogue, readable after an approved share request.
    Apply,
    /// Visible, but the principal is scoped to a region and the dataset says neither where
    /// its rows lie (`region_column`) nor that it has no region (`region_free`).
    OutOfScope,
    /// Not even its existence may be revealed.
    Hidden,
}

impl Access {
    pub fn readable(&self) -> bool {
        matches!(self, Access::Full | Access::Read { .. })
    }

    /// How the catalogue describes the caller's access.
    pub fn label(&self) -> &'static str {
        match self {
            Access::Full => "owner",
            Access::Read { trusted: true, .. } => "granted",
            Access::Read { .. } => "read",
            Access::Apply => "apply",
            Access::OutOfScope => "out_of_scope",
            Access::Hidden => "none",
        }
    }
}

/// Whether `principal` reads only some rows of `dataset` (its region scope, or grants
/// limited to rows): counts of all its rows (rows, bytes, files, snapshot sizes) must not
/// be shown to it then.
pub fn rows_limited(principal: &Principal, dataset: &Dataset, how: &Access) -> bool {
    (principal.region.is_some() && !dataset.region_free)
        || matches!(how, Access::Read { rows: Some(_), .. })
}

/// Why a region-scoped principal cannot read a dataset that is neither region-tagged nor
/// region-free, and what its owner can do about it.
pub fn out_of_scope_message(principal: &Principal, dataset: &Dataset) -> String {
    format!(
        "{} does not say where its rows lie, so a token scoped to region {} cannot read it: \
         its owner ({}) can declare a region_column (PATCH /api/v1/datasets/{}) or mark it \
         region_free if it holds no regional rows",
        dataset.name,
        principal.region.as_deref().unwrap_or("?"),
        dataset.owner,
        dataset.name
    )
}

/// Whether `principal`, whose access to an images dataset is `how`, may be served one of
/// its images, named in column `column`, of a device standing in `region`. An image cannot
/// be masked, so only who may see the column unmasked gets it: the owner, or a reader
/// whose grant unmasks it for every row (a grant limited to some rows cannot be checked
/// against an image alone, so it does not reach images). A region-scoped principal gets
/// only images of its region.
pub fn may_see_image(principal: &Principal, how: &Access, column: &str, region: &str) -> bool {
    let in_scope = match &principal.region {
        None => true,
        Some(_) => principal
            .scope()
            .is_some_and(|scope| scope.contains(region)),
    };
    let unmasked = match how {
        Access::Full => true,
        Access::Read {
            columns,
            unmasked,
            rows,
            ..
        } => {
            columns.as_ref().is_none_or(|c| c.contains(column))
                && unmasked.contains(column)
                && rows.is_none()
        }
        Access::Apply | Access::OutOfScope | Access::Hidden => false,
    };
    in_scope && unmasked
}

/// What `principal` may do with `dataset`, given the active and inactive grants held by the
/// principal's department (grants of other datasets are ignored). A region-scoped
/// principal's own scope is applied by the reader on top of this ([`Principal::scope`]).
pub fn access(
    principal: &Principal,
    dataset: &Dataset,
    grants: &[Grant],
    now: DateTime<Utc>,
) -> Access {
    let how = unscoped_access(principal, dataset, grants, now);
    if principal.region.is_some()
        && how.readable()
        && dataset.region_column.is_none()
        && !dataset.region_free
    {
        return Access::OutOfScope;
    }
    how
}

fn unscoped_access(
    principal: &Principal,
    dataset: &Dataset,
    grants: &[Grant],
    now: DateTime<Utc>,
) -> Access {
    if principal.acts_for(&dataset.owner) {
        return Access::Full;
    }
    if !principal.may_see(dataset) {
        return Access::Hidden;
    }
    // Several active grants of one dataset add up: the union of their columns.
    let mut columns: Option<BTreeSet<String>> = Some(BTreeSet::new());
    let mut unmasked = BTreeSet::new();
    // Several grants' rows add up too; one without a limit allows every row.
    let mut rows: Option<Vec<RowLimit>> = Some(Vec::new());
    let mut granted = false;
    for grant in grants.iter().filter(|g| {
        g.dataset_id == dataset.id && g.department == principal.department && g.active(now)
    }) {
        granted = true;
        match (&mut columns, &grant.columns) {
            (Some(set), Some(more)) => set.extend(more.iter().cloned()),
            (_, None) => columns = None,
            (None, Some(_)) => {}
        }
        unmasked.extend(grant.unmasked.iter().cloned());
        match (&mut rows, &grant.rows) {
            (Some(limits), Some(limit)) => limits.push(limit.clone()),
            (_, None) => rows = None,
            (None, Some(_)) => {}
        }
    }
    match (granted, dataset.sharing) {
        (true, _) => Access::Read {
            // An unconditional dataset is readable in full; a grant on it only unmasks.
            columns: if dataset.sharing == Sharing::Unconditional {
                None
            } else {
                columns
            },
            unmasked,
            trusted: true,
            rows: if dataset.sharing == Sharing::Unconditional {
                None
            } else {
                rows
            },
        },
        (false, Sharing::Unconditional) => Access::Read {
            columns: None,
            unmasked,
            trusted: false,
            rows: None,
        },
        (false, _) => Access::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_go_only_to_who_sees_them_unmasked_and_in_scope() {
        let mut principal = Principal::local_operator();
        principal.role = Role::Analyst;
        principal.department = "jtj".into();
        let read = |unmasked: &[&str], rows: Option<Vec<crate::sharing::RowLimit>>| Access::Read {
            columns: None,
            unmasked: unmasked.iter().map(|c| c.to_string()).collect(),
            trusted: true,
            rows,
        };
        let sees = |principal: &Principal, how: &Access, region: &str| {
            may_see_image(principal, how, "object_key", region)
        };
        assert!(sees(&principal, &Access::Full, "511025"));
        assert!(!sees(&principal, &read(&[], None), "511025"));
        assert!(sees(&principal, &read(&["object_key"], None), "511025"));
        assert!(!sees(
            &principal,
            &read(&["object_key"], Some(vec![])),
            "511025"
        ));
        for how in [Access::Apply, Access::OutOfScope, Access::Hidden] {
            assert!(!sees(&principal, &how, "511025"));
        }
        principal.region = Some("511025".into());
        assert!(sees(&principal, &Access::Full, "511025"));
        assert!(!sees(&principal, &Access::Full, "511011"));
    }

    #[test]
    fn capabilities_follow_the_role_lists_the_checks_use() {
        assert_eq!(
            capabilities(Role::Admin),
            [
                "sql",
                "catalogue",
                "decide",
                "cameras",
                "kpi",
                "audit",
                "tokens"
            ]
        );
        assert_eq!(
            capabilities(Role::Analyst),
            ["sql", "catalogue", "decide", "cameras", "kpi"]
        );
        assert_eq!(capabilities(Role::Producer), ["catalogue", "decide", "kpi"]);
        assert_eq!(capabilities(Role::Dashboard), ["kpi"]);
    }
}

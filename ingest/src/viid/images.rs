//! Serving a stored image: to who may see it unmasked, in scope, audited.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cityhub_catalog::{Action, AuditEvent, DatasetName, Outcome};
use serde_json::{Value, json};

use super::ViidReceiver;
use super::kinds::{IMAGES_DATASET, KINDS, ViidKind};
use crate::IngestError;

/// The column of `viid_images` that names each image.
pub const IMAGE_COLUMN: &str = "object_key";

impl ViidReceiver {
    /// The image stored under `key`, with its media type, for `principal` at `now`: only
    /// to who may see it unmasked ([`cityhub_catalog::access::may_see_image`]). Every
    /// image served, and every refusal, is recorded in the audit log (PIPL art. 26: images
    /// of public-security cameras are for public-security purposes). An image whose
    /// dataset the principal may not even see is answered as not found.
    pub async fn image(
        &self,
        principal: &cityhub_catalog::Principal,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<(Bytes, &'static str), IngestError> {
        let not_found = || IngestError::DatasetNotFound(format!("image {key}"));
        let Some(owner) = image_owner(key) else {
            return Err(not_found());
        };
        let dataset = self
            .ingest
            .catalog
            .dataset(&owner.dataset)
            .await?
            .ok_or_else(not_found)?;
        let grants = self
            .ingest
            .catalog
            .grants_held_by(Some(&principal.department))
            .await?;
        let how = cityhub_catalog::access::access(principal, &dataset, &grants, now);
        let event = |outcome, detail: Value| {
            AuditEvent::by(principal, Action::ImageRead, outcome)
                .dataset(owner.dataset.to_string())
                .detail(detail)
        };
        if how == cityhub_catalog::Access::Hidden {
            self.ingest.audit.record(event(
                Outcome::Refused,
                json!({"key": key, "why": "hidden"}),
            ));
            return Err(not_found());
        }
        if !cityhub_catalog::access::may_see_image(principal, &how, IMAGE_COLUMN, &owner.region) {
            self.ingest.audit.record(event(
                Outcome::Refused,
                json!({"key": key, "access": how.label()}),
            ));
            return Err(IngestError::Forbidden(format!(
                "images of {} are served only to who may see {IMAGE_COLUMN} unmasked (its \
                 owner {}, or a department whose grant unmasks it) and, for region-scoped \
                 tokens, only images of their region; apply for a grant with unmasked: \
                 [\"{IMAGE_COLUMN}\"]",
                owner.dataset, dataset.owner
            )));
        }
        let bytes = match self.ingest.storage.get(key).await {
            Ok(bytes) => bytes,
            Err(err) => {
                // Past retention, or never written: not found either way.
                tracing::debug!(key, error = %err, "An image asked for is not in the object store.");
                return Err(not_found());
            }
        };
        self.ingest.audit.record(event(
            Outcome::Ok,
            json!({"key": key, "bytes": bytes.len(), "access": how.label()}),
        ));
        metrics::counter!("cityhub_viid_images_served_total").increment(1);
        Ok((bytes, content_type(key)))
    }
}

/// The media type of an image by its key's extension, for serving it.
pub fn content_type(key: &str) -> &'static str {
    match key.rsplit('.').next() {
        Some("jpg") => "image/jpeg",
        Some("png") => "image/png",
        Some("bmp") => "image/bmp",
        Some("gif") => "image/gif",
        Some("tif") => "image/tiff",
        _ => "application/octet-stream",
    }
}

/// Whose an image is, read from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOwner {
    /// The images dataset that names it (`{department}.viid_images`): who may see it.
    pub dataset: DatasetName,
    /// Where its device stands (GB/T 2260): which region-scoped readers may see it.
    pub region: String,
}

/// The owner of an image key (`viid/{department}/{kind}/{region}/{date}/{uuid}.{ext}`),
/// if it is one the receiver writes.
pub fn image_owner(key: &str) -> Option<ImageOwner> {
    let parts: Vec<&str> = key.split('/').collect();
    let [root, department, kind, region, date, file] = parts[..] else {
        return None;
    };
    let well_formed = root == "viid"
        && KINDS
            .iter()
            .chain([&ViidKind::Image])
            .any(|k| k.label() == kind)
        && region.len() == 6
        && region.bytes().all(|b| b.is_ascii_digit())
        && date.len() == 10
        && file.split_once('.').is_some_and(|(stem, ext)| {
            !stem.is_empty()
                && stem.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
                && !ext.is_empty()
        });
    if !well_formed {
        return None;
    }
    Some(ImageOwner {
        dataset: DatasetName::parse(&format!("{department}.{IMAGES_DATASET}")).ok()?,
        region: region.to_string(),
    })
}

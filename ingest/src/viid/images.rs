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
        let bytes = match self
            .ingest
            .storage
            .get_range(&owner.pack, owner.range.clone())
            .await
        {
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

/// Whose an image is and where its bytes are, read from its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOwner {
    /// The images dataset that names it (`{department}.viid_images`): who may see it.
    pub dataset: DatasetName,
    /// Where its device stands (GB/T 2260): which region-scoped readers may see it.
    pub region: String,
    /// The pack object holding it.
    pub pack: String,
    /// Its bytes within the pack.
    pub range: std::ops::Range<u64>,
}

/// The owner of an image key
/// (`viid/{department}/{date}/{kind}/{region}/{uuid}.pack/{offset}-{length}.{ext}`), if it
/// is one the receiver writes.
pub fn image_owner(key: &str) -> Option<ImageOwner> {
    let parts: Vec<&str> = key.split('/').collect();
    let [root, department, date, kind, region, pack, image] = parts[..] else {
        return None;
    };
    let pack_ok = pack.strip_suffix(".pack").is_some_and(|stem| {
        !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    });
    let (range, ext) = image.split_once('.')?;
    let (offset, length) = range.split_once('-')?;
    let (offset, length): (u64, u64) = (offset.parse().ok()?, length.parse().ok()?);
    let well_formed = root == "viid"
        && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
        && KINDS
            .iter()
            .chain([&ViidKind::Image])
            .any(|k| k.label() == kind)
        && region.len() == 6
        && region.bytes().all(|b| b.is_ascii_digit())
        && pack_ok
        && length > 0
        && !ext.is_empty()
        && ext.bytes().all(|b| b.is_ascii_alphanumeric());
    if !well_formed {
        return None;
    }
    Some(ImageOwner {
        dataset: DatasetName::parse(&format!("{department}.{IMAGES_DATASET}")).ok()?,
        region: region.to_string(),
        pack: parts[..6].join("/"),
        range: offset..offset.checked_add(length)?,
    })
}

impl ViidReceiver {
    /// Deletes the image packs whose whole capture day (Beijing time) lies before their
    /// department's retention: the row retention of `{dept}.viid_images`, so that no image
    /// outlives its row by more than a day and none goes before it. Answers how many packs.
    pub async fn expire_images(&self, now: DateTime<Utc>) -> Result<u64, IngestError> {
        let mut deleted = 0;
        for dataset in self.ingest.catalog.list_datasets().await? {
            if dataset.name.table() != IMAGES_DATASET {
                continue;
            }
            let Some(retention) = &dataset.row_retention else {
                continue;
            };
            let cutoff = now - chrono::Duration::days(i64::from(retention.days));
            let department = dataset.name.department();
            for folder in self
                .ingest
                .storage
                .folders(&format!("viid/{department}/"))
                .await?
            {
                let day = folder
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
                let Some(day) = day else { continue };
                let day_ends = day
                    .succ_opt()
                    .and_then(|next| next.and_hms_opt(0, 0, 0))
                    .and_then(|midnight| {
                        use chrono::TimeZone;
                        super::fields::beijing()
                            .from_local_datetime(&midnight)
                            .single()
                    });
                if day_ends.is_none_or(|end| end > cutoff) {
                    continue;
                }
                let mut gone = 0;
                for object in self.ingest.storage.list(&folder).await? {
                    self.ingest.storage.remove(&object.key).await?;
                    gone += 1;
                }
                tracing::info!(
                    department,
                    day = %day,
                    images = gone,
                    retention_days = retention.days,
                    "Deleted a day of GA/T 1400 image packs past retention."
                );
                self.ingest.audit.record(
                    AuditEvent::by_hub(Action::Gc, Outcome::Ok)
                        .dataset(dataset.name.to_string())
                        .detail(json!({"image_packs_deleted": gone, "day": day.to_string()})),
                );
                deleted += gone;
            }
        }
        metrics::counter!("cityhub_viid_image_packs_expired_total").increment(deleted);
        Ok(deleted)
    }
}

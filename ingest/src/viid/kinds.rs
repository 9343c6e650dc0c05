//! The GA/T 1400 resources the hub receives, and the dataset each lands in.

use cityhub_catalog::{
    Classification, Column, ColumnType, DatasetName, NewDataset, RowRetention, Sensitivity, Sharing,
};

use super::fields::{
    COLOR_CODES, Check, DIRECTION_CODES, Field, GENDER_CODES, IMAGE_FORMATS, INFO_KINDS,
    ONLINE_CODES, field, personal,
};

/// One kind of record a platform posts to `/VIID/{resource}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViidKind {
    /// Collection devices (APE, 采集设备).
    Ape,
    MotorVehicle,
    NonMotorVehicle,
    Face,
    Person,
    /// Images on their own (`/VIID/Images`): they land in the images dataset only.
    Image,
}

/// The kinds of records, each with its own landing dataset.
pub const KINDS: [ViidKind; 5] = [
    ViidKind::Ape,
    ViidKind::MotorVehicle,
    ViidKind::NonMotorVehicle,
    ViidKind::Face,
    ViidKind::Person,
];

/// The dataset every kind's images land in, beside the records.
pub const IMAGES_DATASET: &str = "viid_images";

const PERSON_FIELDS: [Field; 7] = [
    field(
        "GenderCode",
        "gender_code",
        Check::Code(GENDER_CODES),
        "GB/T 2261.1 sex code",
    ),
    field(
        "AgeUpLimit",
        "age_up_limit",
        Check::Int(0, 150),
        "estimated age, upper bound",
    ),
    field(
        "AgeLowerLimit",
        "age_lower_limit",
        Check::Int(0, 150),
        "estimated age, lower bound",
    ),
    field(
        "IDType",
        "id_type",
        Check::Text(3),
        "kind of identity document (111: resident identity card)",
    ),
    personal(
        "IDNumber",
        "id_number",
        Check::Text(30),
        Sensitivity::IdCard,
        "identity document number",
    ),
    personal(
        "Name",
        "name",
        Check::Text(50),
        Sensitivity::PersonName,
        "name",
    ),
    field(
        "LocationMarkTime",
        "location_mark_time",
        Check::Time,
        "when the position in the image was marked",
    ),
];

impl ViidKind {
    /// The path under `/VIID/`, e.g. `MotorVehicles`.
    pub fn resource(self) -> &'static str {
        match self {
            ViidKind::Ape => "APEs",
            ViidKind::Image => "Images",
            ViidKind::MotorVehicle => "MotorVehicles",
            ViidKind::NonMotorVehicle => "NonMotorVehicles",
            ViidKind::Face => "Faces",
            ViidKind::Person => "Persons",
        }
    }

    pub fn from_resource(resource: &str) -> Option<Self> {
        KINDS
            .into_iter()
            .chain([ViidKind::Image])
            .find(|kind| kind.resource() == resource)
    }

    /// The JSON object name, e.g. `MotorVehicle` (its list is `MotorVehicleListObject`,
    /// its items `MotorVehicleObject`).
    pub fn object_name(self) -> &'static str {
        match self {
            ViidKind::Ape => "APE",
            ViidKind::Image => "Image",
            ViidKind::MotorVehicle => "MotorVehicle",
            ViidKind::NonMotorVehicle => "NonMotorVehicle",
            ViidKind::Face => "Face",
            ViidKind::Person => "Person",
        }
    }

    /// The field that identifies a record.
    pub fn id_field(self) -> &'static str {
        match self {
            ViidKind::Ape => "ApeID",
            ViidKind::Image => "ImageID",
            ViidKind::MotorVehicle => "MotorVehicleID",
            ViidKind::NonMotorVehicle => "NonMotorVehicleID",
            ViidKind::Face => "FaceID",
            ViidKind::Person => "PersonID",
        }
    }

    /// The column the record's id is stored in: its field in snake case.
    pub fn id_column(self) -> &'static str {
        match self {
            ViidKind::Ape => "ape_id",
            ViidKind::Image => "image_id",
            ViidKind::MotorVehicle => "motor_vehicle_id",
            ViidKind::NonMotorVehicle => "non_motor_vehicle_id",
            ViidKind::Face => "face_id",
            ViidKind::Person => "person_id",
        }
    }

    /// How a record's id is written: collection devices have 20-digit device ids, the
    /// records 48 digits (41-digit source id, type, serial).
    pub fn id_length(self) -> usize {
        match self {
            ViidKind::Ape => 20,
            ViidKind::Image => 41,
            _ => 48,
        }
    }

    /// The name the images dataset gives records of this kind (`parent_kind`).
    pub fn label(self) -> &'static str {
        match self {
            ViidKind::Ape => "ape",
            ViidKind::Image => "image",
            ViidKind::MotorVehicle => "motor_vehicle",
            ViidKind::NonMotorVehicle => "non_motor_vehicle",
            ViidKind::Face => "face",
            ViidKind::Person => "person",
        }
    }

    /// The dataset the records land in, within the account's department.
    pub fn dataset(self) -> &'static str {
        match self {
            ViidKind::Ape => "viid_apes",
            ViidKind::Image => IMAGES_DATASET,
            ViidKind::MotorVehicle => "viid_motor_vehicles",
            ViidKind::NonMotorVehicle => "viid_non_motor_vehicles",
            ViidKind::Face => "viid_faces",
            ViidKind::Person => "viid_persons",
        }
    }

    /// The fields where the capture time is read, first present wins. Collection devices
    /// have none: their rows are timed by their arrival.
    pub fn time_fields(self) -> &'static [&'static str] {
        match self {
            ViidKind::Ape => &[],
            ViidKind::Image => &["ShotTime"],
            ViidKind::MotorVehicle => &["PassTime"],
            ViidKind::NonMotorVehicle => &["ShotTime", "AppearTime", "MarkTime"],
            ViidKind::Face => &["ShotTime", "FaceAppearTime", "LocationMarkTime"],
            ViidKind::Person => &["ShotTime", "PersonAppearTime", "LocationMarkTime"],
        }
    }

    /// The kept fields besides the id, the capture time and the images.
    pub fn fields(self) -> Vec<Field> {
        let common = [
            field(
                "InfoKind",
                "info_kind",
                Check::Code(INFO_KINDS),
                "0 other, 1 automatic, 2 manual",
            ),
            field(
                "SourceID",
                "source_id",
                Check::Digits(41),
                "the image or video the record was taken from",
            ),
        ];
        let device = field(
            "DeviceID",
            "device_id",
            Check::Digits(20),
            "the collection device (joins hub.cameras.id)",
        );
        match self {
            // An image's own fields are checked as an image's (its row in viid_images).
            ViidKind::Image => vec![device],
            ViidKind::Ape => vec![
                field("Name", "name", Check::Text(100), "device name"),
                field("Model", "model", Check::Text(100), "device model"),
                field("IPAddr", "ip_addr", Check::Text(64), "IP address"),
                field("Port", "port", Check::Int(0, 65_535), "port"),
                field(
                    "Longitude",
                    "longitude",
                    Check::Float(-180.0, 180.0),
                    "WGS 84 longitude",
                ),
                field(
                    "Latitude",
                    "latitude",
                    Check::Float(-90.0, 90.0),
                    "WGS 84 latitude",
                ),
                field(
                    "PlaceCode",
                    "place_code",
                    Check::Digits(6),
                    "GB/T 2260 code of where it stands",
                ),
                field(
                    "OrgCode",
                    "org_code",
                    Check::Text(12),
                    "owning organisation",
                ),
                field(
                    "IsOnline",
                    "is_online",
                    Check::Code(ONLINE_CODES),
                    "1 online, 2 offline, 9 other",
                ),
            ],
            ViidKind::MotorVehicle => {
                let mut fields = common.to_vec();
                fields.extend([
                    field(
                        "TollgateID",
                        "tollgate_id",
                        Check::Digits(20),
                        "the checkpoint (卡口)",
                    ),
                    device,
                    field("LaneNo", "lane_no", Check::Int(0, 99), "lane number"),
                    personal(
                        "PlateNo",
                        "plate_no",
                        Check::Text(15),
                        Sensitivity::PlateNo,
                        "plate number",
                    ),
                    field(
                        "PlateColor",
                        "plate_color",
                        Check::Code(COLOR_CODES),
                        "ColorType code",
                    ),
                    field(
                        "PlateClass",
                        "plate_class",
                        Check::Digits(2),
                        "GA 24.7 plate kind, e.g. 02 small car",
                    ),
                    field(
                        "VehicleClass",
                        "vehicle_class",
                        Check::VehicleClass,
                        "GA 24.4 vehicle type, e.g. K33",
                    ),
                    field(
                        "VehicleBrand",
                        "vehicle_brand",
                        Check::Text(32),
                        "brand code",
                    ),
                    field(
                        "VehicleColor",
                        "vehicle_color",
                        Check::Code(COLOR_CODES),
                        "ColorType code",
                    ),
                    field("Speed", "speed", Check::Float(0.0, 500.0), "km/h"),
                    field(
                        "Direction",
                        "direction",
                        Check::Code(DIRECTION_CODES),
                        "HDirection code",
                    ),
                ]);
                fields
            }
            ViidKind::NonMotorVehicle => {
                let mut fields = common.to_vec();
                fields.extend([
                    device,
                    personal(
                        "PlateNo",
                        "plate_no",
                        Check::Text(15),
                        Sensitivity::PlateNo,
                        "plate number (electric bikes)",
                    ),
                    field(
                        "VehicleColor",
                        "vehicle_color",
                        Check::Code(COLOR_CODES),
                        "ColorType code",
                    ),
                    field("Speed", "speed", Check::Float(0.0, 200.0), "km/h"),
                    field(
                        "Direction",
                        "direction",
                        Check::Code(DIRECTION_CODES),
                        "HDirection code",
                    ),
                ]);
                fields
            }
            ViidKind::Face | ViidKind::Person => {
                let mut fields = common.to_vec();
                fields.push(device);
                fields.extend(PERSON_FIELDS);
                fields.extend(
                    [
                        ("LeftTopX", "left_top_x"),
                        ("LeftTopY", "left_top_y"),
                        ("RightBtmX", "right_btm_x"),
                        ("RightBtmY", "right_btm_y"),
                    ]
                    .map(|(json, column)| {
                        field(
                            json,
                            column,
                            Check::Int(0, 100_000),
                            "box in the source image",
                        )
                    }),
                );
                fields
            }
        }
    }

    /// The landing dataset of this kind for `department`: the kept fields, the capture
    /// time as sort key and retention column, and where the device stands (the first six
    /// digits of its id) as region column, so county tokens see their own records.
    pub fn new_dataset(self, department: &str, retention_days: u32) -> NewDataset {
        let mut columns = vec![column(
            self.id_column(),
            ColumnType::String,
            false,
            "GA/T 1400 id of the record",
        )];
        let timed = !self.time_fields().is_empty();
        if timed {
            columns.push(column(
                "captured_at",
                ColumnType::Timestamp,
                false,
                "capture time (PassTime, ShotTime or when it appeared)",
            ));
        }
        for field in self.fields() {
            let mut column = column(
                field.column,
                field.check.column_type(),
                true,
                field.description,
            );
            column.sensitivity = field.sensitivity;
            columns.push(column);
        }
        if self != ViidKind::Ape {
            columns.push(column(
                "image_count",
                ColumnType::Int32,
                false,
                "images received with it (rows of viid_images)",
            ));
        }
        columns.extend(arrival_columns());
        let (sort_key, row_retention, primary_key) = if timed {
            (
                vec!["captured_at".to_string()],
                Some(RowRetention {
                    column: "captured_at".into(),
                    days: retention_days,
                }),
                vec![],
            )
        } else {
            // A device's latest report replaces the one before.
            (vec![], None, vec![self.id_column().to_string()])
        };
        landing_dataset(
            department,
            self.dataset(),
            format!(
                "GA/T 1400 {} records received by the hub's /VIID/{} receiver",
                self.object_name(),
                self.resource()
            ),
            columns,
            sort_key,
            row_retention,
            primary_key,
        )
    }
}

/// The images dataset of `department`: one row per image, the image itself an object in
/// the object store named by `object_key`.
pub fn images_dataset(department: &str, retention_days: u32) -> NewDataset {
    let mut columns = vec![
        column("image_id", ColumnType::String, true, "GA/T 1400 ImageID"),
        column(
            "parent_kind",
            ColumnType::String,
            false,
            "motor_vehicle, non_motor_vehicle, face or person",
        ),
        column(
            "parent_id",
            ColumnType::String,
            false,
            "the id of the record it belongs to",
        ),
        column(
            "device_id",
            ColumnType::String,
            true,
            "the collection device",
        ),
        column(
            "captured_at",
            ColumnType::Timestamp,
            false,
            "ShotTime of the image, else its record's capture time",
        ),
        column(
            "type",
            ColumnType::String,
            true,
            "ImageType, e.g. 01 vehicle, 02 plate, 11 face, 14 scene",
        ),
        column(
            "file_format",
            ColumnType::String,
            true,
            &format!("one of {}", IMAGE_FORMATS.join(", ")),
        ),
        column("width", ColumnType::Int32, true, "pixels"),
        column("height", ColumnType::Int32, true, "pixels"),
    ];
    let mut key = column(
        "object_key",
        ColumnType::String,
        true,
        "where the image is: GET /api/v1/images/{object_key} (audited)",
    );
    key.sensitivity = Some(Sensitivity::FaceImage);
    columns.push(key);
    columns.push(column(
        "bytes",
        ColumnType::Int64,
        true,
        "size of the image",
    ));
    columns.push(column(
        "sha256",
        ColumnType::String,
        true,
        "SHA-256 of the image, hex",
    ));
    let mut path = column(
        "storage_path",
        ColumnType::String,
        true,
        "the sender's URL, for images sent by reference (StoragePath)",
    );
    path.sensitivity = Some(Sensitivity::FaceImage);
    columns.push(path);
    columns.extend(arrival_columns());
    landing_dataset(
        department,
        IMAGES_DATASET,
        "Images received with GA/T 1400 records; the images are objects in the object store, \
         served one by one to who may see them unmasked"
            .into(),
        columns,
        vec!["captured_at".into()],
        Some(RowRetention {
            column: "captured_at".into(),
            days: retention_days,
        }),
        vec![],
    )
}

/// Who sent a row and when it arrived, and where its device stands.
fn arrival_columns() -> [Column; 3] {
    [
        column(
            "region_code",
            ColumnType::String,
            false,
            "GB/T 2260 code of the device (the first six digits of its id)",
        ),
        column(
            "platform_id",
            ColumnType::String,
            false,
            "the account that sent it (User-Identify)",
        ),
        column(
            "received_at",
            ColumnType::Timestamp,
            false,
            "when the hub received it",
        ),
    ]
}

fn landing_dataset(
    department: &str,
    table: &str,
    description: String,
    columns: Vec<Column>,
    sort_key: Vec<String>,
    row_retention: Option<RowRetention>,
    primary_key: Vec<String>,
) -> NewDataset {
    NewDataset {
        name: DatasetName::parse(&format!("{department}.{table}"))
            .expect("department codes and the landing tables make valid names"),
        description,
        columns,
        // Faces, plates and identity numbers of the public: 重要数据, shared on approval.
        classification: Classification::Important,
        sharing: Sharing::Conditional,
        resource_code: None,
        update_cycle: Some("real-time".into()),
        tags: vec!["viid".into(), "ga/t 1400".into()],
        sort_key,
        primary_key,
        snapshot_retention_days: None,
        row_retention,
        region_column: Some("region_code".into()),
        region_free: false,
    }
}

fn column(name: &str, column_type: ColumnType, nullable: bool, description: &str) -> Column {
    let mut column = Column::new(name, column_type, nullable);
    column.description = Some(description.to_string());
    column
}

/// `MotorVehicleID` as `motor_vehicle_id`.
pub fn snake(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let after_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
            let before_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if i > 0 && (after_lower || (before_lower && chars[i - 1].is_ascii_uppercase())) {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_snake_case_columns() {
        assert_eq!(snake("MotorVehicleID"), "motor_vehicle_id");
        assert_eq!(snake("ApeID"), "ape_id");
        assert_eq!(snake("FaceID"), "face_id");
        assert_eq!(snake("NonMotorVehicleID"), "non_motor_vehicle_id");
        for kind in KINDS.iter().copied().chain([ViidKind::Image]) {
            assert_eq!(kind.id_column(), snake(kind.id_field()), "{kind:?}");
        }
    }

    #[test]
    fn every_landing_dataset_is_a_valid_registration() {
        for kind in KINDS {
            let new = kind.new_dataset("gaj", 180);
            cityhub_catalog::lifecycle::validate_new_dataset(&new)
                .unwrap_or_else(|err| panic!("{}: {err}", kind.dataset()));
        }
        cityhub_catalog::lifecycle::validate_new_dataset(&images_dataset("gaj", 180))
            .expect("images dataset");
    }
}

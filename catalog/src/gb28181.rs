//! GB/T 28181 device and channel ids: 20 ASCII digits `CCCCCCCC II TTT N SSSSSS`
//! (centre code, industry, type, network, serial), validated and decoded with the code
//! tables of `shared/domain/gb28181.md`.
//!
//! The centre code's first six digits must be a GB/T 2260 region the hub knows, current or
//! retired (old devices in 隆昌 still carry 511028 隆昌县, which became 511083 隆昌市).

use std::fmt;

use serde::Serialize;

use crate::region::{Region, region};

/// A decoded, valid id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceId {
    /// The 20 digits.
    pub id: String,
    /// Digits 1-8.
    pub centre_code: String,
    /// The region of digits 1-6.
    pub region_code: &'static str,
    pub region_name: &'static str,
    /// The current code of a retired region (511028 → 511083), else the region itself.
    pub current_region_code: &'static str,
    pub industry: u8,
    pub industry_name: &'static str,
    pub type_code: u16,
    pub type_name: &'static str,
    pub network: u8,
    pub network_name: &'static str,
    pub serial: u32,
}

impl DeviceId {
    /// Digits 1-10: the SIP domain of the platform the id belongs to.
    pub fn sip_domain(&self) -> &str {
        &self.id[..10]
    }

    /// A camera channel (types 131 camera and 132 network camera).
    pub fn is_camera(&self) -> bool {
        matches!(self.type_code, 131 | 132)
    }
}

/// Why an id was refused; each names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdError {
    Length(usize),
    NotDigit { position: usize, found: char },
    UnknownRegion(String),
    UnknownType(u16),
    ZeroSerial,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Length(length) => write!(
                f,
                "id: a GB/T 28181 id has exactly 20 digits, this one has {length} characters"
            ),
            IdError::NotDigit { position, found } => write!(
                f,
                "id: character {position} is {found:?}; a GB/T 28181 id is digits only"
            ),
            IdError::UnknownRegion(code) => write!(
                f,
                "centre code (digits 1-6): {code} is not a GB/T 2260 region this hub knows \
                 (see hub.regions)"
            ),
            IdError::UnknownType(code) => write!(
                f,
                "type (digits 11-13): {code} is not a GB/T 28181 device type (131 camera, \
                 132 network camera, 118 NVR, 200 platform, ...)"
            ),
            IdError::ZeroSerial => write!(
                f,
                "serial (digits 15-20): 000000 is not a serial number; serials run 000001-999999"
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// Parses and decodes a 20-digit id.
pub fn parse(text: &str) -> Result<DeviceId, IdError> {
    let length = text.chars().count();
    if let Some((index, found)) = text.chars().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
        // A wrong length is the likelier mistake when the text is not 20 characters.
        if length != 20 {
            return Err(IdError::Length(length));
        }
        return Err(IdError::NotDigit {
            position: index + 1,
            found,
        });
    }
    if length != 20 {
        return Err(IdError::Length(length));
    }
    let number = |range: std::ops::Range<usize>| -> u32 {
        text[range]
            .bytes()
            .fold(0, |n, digit| n * 10 + u32::from(digit - b'0'))
    };
    let region: &'static Region =
        region(&text[..6]).ok_or_else(|| IdError::UnknownRegion(text[..6].to_string()))?;
    let type_code = number(10..13) as u16;
    let type_name = type_name(type_code).ok_or(IdError::UnknownType(type_code))?;
    let serial = number(14..20);
    if serial == 0 {
        return Err(IdError::ZeroSerial);
    }
    let industry = number(8..10) as u8;
    let network = number(13..14) as u8;
    Ok(DeviceId {
        id: text.to_string(),
        centre_code: text[..8].to_string(),
        region_code: region.code,
        region_name: region.name,
        current_region_code: crate::region::current_code(region),
        industry,
        industry_name: industry_name(industry),
        type_code,
        type_name,
        network,
        network_name: network_name(network),
        serial,
    })
}

pub fn industry_name(code: u8) -> &'static str {
    match code {
        0 => "社会治安路面 public-security roads",
        1 => "社区 community",
        2 => "内部 internal",
        3 => "其他 other",
        4 => "交通路面 traffic roads",
        5 => "交通卡口 traffic checkpoints",
        6 => "交通内部 traffic internal",
        7 => "交通其他 traffic other",
        8 => "城市管理 urban management",
        9 => "卫生环保 health and environment",
        10 => "商检海关 customs",
        11 => "教育 education",
        12 => "民航 civil aviation",
        13 => "铁路 railways",
        14 => "航运 shipping",
        40..=59 => "其他行业 other economic sectors",
        _ => "未分配 unassigned",
    }
}

pub fn type_name(code: u16) -> Option<&'static str> {
    Some(match code {
        111 => "DVR",
        112 => "video server",
        113 => "encoder",
        114 => "decoder",
        115 | 116 => "switching matrix",
        117 => "alarm controller",
        118 => "NVR",
        120 => "online video-image capture system",
        121 => "video checkpoint (卡口)",
        122 => "multi-lens device",
        123 => "parking gate",
        124 => "person gate",
        125 => "security check",
        130 => "HVR",
        131 => "camera",
        132 => "network camera (IPC)",
        133 => "display",
        134 => "alarm input",
        135 => "alarm output",
        136 => "voice input",
        137 => "voice output",
        138 => "mobile transmission",
        139 => "other peripheral",
        140 => "relay alarm output",
        141 => "barrier gate",
        142 => "smart door",
        143 => "credential reader",
        200 => "central signalling server (platform)",
        201 => "web server",
        202 => "media distribution server",
        203 => "proxy server",
        204 => "security server",
        205 => "alarm server",
        206 => "database server",
        207 => "GIS server",
        208 => "management server",
        209 => "access gateway",
        210 => "media storage server",
        211 => "signalling security gateway",
        215 => "business group",
        216 => "virtual organisation",
        300 => "central user",
        400 => "terminal user",
        500 => "integrated application platform",
        501 => "O&M platform",
        502 => "analysis system",
        503 => "video-image information database (GA/T 1400)",
        505 => "analysis device",
        _ => return None,
    })
}

fn network_name(code: u8) -> &'static str {
    match code {
        0 | 1 => "公安视频传输网 public-security video network",
        2 => "行业专网 industry private network",
        3 => "政法网 political-legal network",
        4 => "公安移动网 public-security mobile network",
        5 => "公安信息网 public-security information network",
        6 => "电子政务外网 e-government extranet",
        7 => "互联网 internet",
        8 => "专线 leased line",
        _ => "预留 reserved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_neijiang_camera_decodes() {
        let id = parse("51101100001320000042").expect("valid");
        assert_eq!(id.region_code, "511011");
        assert_eq!(id.region_name, "东兴区");
        assert_eq!(id.industry, 0);
        assert_eq!(id.type_code, 132);
        assert!(id.is_camera());
        assert_eq!(id.network, 0);
        assert_eq!(id.serial, 42);
        assert_eq!(id.sip_domain(), "5110110000");
    }

    #[test]
    fn retired_region_codes_decode_to_their_successor() {
        let id = parse("51102800051317000001").expect("valid");
        assert_eq!(id.region_name, "隆昌县");
        assert_eq!(id.current_region_code, "511083");
        assert_eq!(id.industry, 5);
        assert_eq!(id.network, 7);
    }

    #[test]
    fn every_rejection_names_its_field() {
        let cases = [
            (
                "5110110000132000004",
                "id: a GB/T 28181 id has exactly 20 digits",
            ),
            (
                "511011000013200000421",
                "exactly 20 digits, this one has 21",
            ),
            ("5110110000132000004X", "character 20 is 'X'"),
            ("44030500001320000042", "centre code (digits 1-6): 440305"),
            ("51101100009990000042", "type (digits 11-13): 999"),
            ("51101100001320000000", "serial (digits 15-20)"),
            ("", "this one has 0 characters"),
            (
                "五一一〇一一〇〇〇〇一三二〇〇〇〇〇四二",
                "character 1 is '五'",
            ),
        ];
        for (text, expected) in cases {
            let message = parse(text).expect_err(text).to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    /// Random valid ids round-trip through parse; random edits of them are either still
    /// valid or refused with a message, never a panic.
    #[test]
    fn random_ids_round_trip_and_random_edits_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(28181);
        let regions = [
            "510000", "511000", "511002", "511011", "511024", "511025", "511083", "511028",
        ];
        let types = [111u16, 118, 121, 131, 132, 200, 216, 503];
        for _ in 0..10_000 {
            let region = regions[rng.random_range(0..regions.len())];
            let text = format!(
                "{region}{:02}{:02}{:03}{}{:06}",
                rng.random_range(0..100),
                rng.random_range(0..100),
                types[rng.random_range(0..types.len())],
                rng.random_range(0..10),
                rng.random_range(1..1_000_000),
            );
            let id = parse(&text).expect("generated ids are valid");
            assert_eq!(id.id, text);
            assert_eq!(format!("{}{:06}", &text[..14], id.serial), text);
            let mut edited: Vec<char> = text.chars().collect();
            let at = rng.random_range(0..edited.len());
            match rng.random_range(0..3) {
                0 => edited[at] = char::from(rng.random_range(0x20u8..0x7f)),
                1 => {
                    edited.remove(at);
                }
                _ => edited.insert(at, '9'),
            }
            let edited: String = edited.into_iter().collect();
            if let Ok(id) = parse(&edited) {
                assert_eq!(id.id.len(), 20);
            }
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        const KNOWN: &[&str] = &[
            "510000", "511000", "511002", "511011", "511024", "511025", "511083", "511028",
        ];

        proptest! {
            /// Every valid id decodes to the fields its digits spell.
            #[test]
            fn valid_ids_decode_their_digits(
                region in proptest::sample::select(KNOWN),
                industry in 0u8..100,
                type_code in proptest::sample::select(&[111u16, 118, 121, 131, 132, 200, 503][..]),
                network in 0u8..10,
                serial in 1u32..1_000_000,
            ) {
                let text = format!("{region}00{industry:02}{type_code}{network}{serial:06}");
                let id = parse(&text).expect("valid");
                prop_assert_eq!(id.region_code, region);
                prop_assert_eq!(id.industry, industry);
                prop_assert_eq!(id.type_code, type_code);
                prop_assert_eq!(id.network, network);
                prop_assert_eq!(id.serial, serial);
            }

            /// Any length but 20 is refused for its length.
            #[test]
            fn wrong_lengths_name_the_length(digits in "[0-9]{0,40}") {
                prop_assume!(digits.len() != 20);
                prop_assert_eq!(parse(&digits), Err(IdError::Length(digits.len())));
            }

            /// A non-digit anywhere is refused at its position.
            #[test]
            fn a_non_digit_is_named_with_its_position(
                position in 0usize..20,
                found in proptest::char::range('!', '~').prop_filter("not a digit", |c| !c.is_ascii_digit()),
            ) {
                let mut text: Vec<char> = "51102500001320000017".chars().collect();
                text[position] = found;
                let text: String = text.into_iter().collect();
                prop_assert_eq!(parse(&text), Err(IdError::NotDigit { position: position + 1, found }));
            }

            /// A centre code outside the known regions is refused for its region.
            #[test]
            fn unknown_regions_are_refused(region in "[0-9]{6}") {
                prop_assume!(!KNOWN.contains(&region.as_str()));
                let text = format!("{region}00001320000017");
                prop_assert_eq!(parse(&text), Err(IdError::UnknownRegion(region)));
            }

            /// A type outside the table is refused for its type.
            #[test]
            fn unknown_types_are_refused(type_code in 0u16..1000) {
                prop_assume!(type_name(type_code).is_none());
                let text = format!("5110250000{type_code:03}0000017");
                prop_assert_eq!(parse(&text), Err(IdError::UnknownType(type_code)));
            }
        }
    }
}

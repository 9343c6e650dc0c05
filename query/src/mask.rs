//! Masking conventions for personal data (`shared/domain/sharing-and-masking.md`).
//!
//! Every function keeps the character count of what it hides, so a masked value still shows
//! its shape (an 11-digit mobile number stays 11 characters) but never the hidden digits.
//! Values too short to keep anything safely are masked completely.

use cityhub_catalog::Sensitivity;

/// How one column is shown to one reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mask {
    /// Mobile numbers: first 3 and last 4 (`180****1999`).
    Phone,
    /// ID card numbers for wider sharing: first 1 and last 2 (the first 6 digits name the
    /// place of registration).
    IdCardWide,
    /// ID card numbers for a department holding a grant: first 6 and last 4.
    IdCardTrusted,
    /// Person names: the surname only (`张*`, `欧阳**`).
    PersonName,
    /// Addresses: down to the district or county.
    Address,
    /// Plate numbers: the province character and the last 2.
    PlateNo,
    /// Face images and image URLs: withheld (NULL).
    Withheld,
}

impl Mask {
    /// The mask a column tagged `sensitivity` gets; `trusted` readers hold a grant.
    pub fn for_column(sensitivity: Sensitivity, trusted: bool) -> Self {
        match sensitivity {
            Sensitivity::Phone => Mask::Phone,
            Sensitivity::IdCard if trusted => Mask::IdCardTrusted,
            Sensitivity::IdCard => Mask::IdCardWide,
            Sensitivity::PersonName => Mask::PersonName,
            Sensitivity::Address => Mask::Address,
            Sensitivity::PlateNo => Mask::PlateNo,
            Sensitivity::FaceImage => Mask::Withheld,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mask::Phone => "phone",
            Mask::IdCardWide => "id_card_wide",
            Mask::IdCardTrusted => "id_card_trusted",
            Mask::PersonName => "person_name",
            Mask::Address => "address",
            Mask::PlateNo => "plate_no",
            Mask::Withheld => "withheld",
        }
    }

    /// The mask called `name` (as [`Mask::name`] spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Mask::Phone,
            Mask::IdCardWide,
            Mask::IdCardTrusted,
            Mask::PersonName,
            Mask::Address,
            Mask::PlateNo,
            Mask::Withheld,
        ]
        .into_iter()
        .find(|mask| mask.name() == name)
    }

    /// The masked text of `value`; `None` when the value is withheld altogether.
    pub fn apply(self, value: &str) -> Option<String> {
        let mut out = String::new();
        self.apply_into(value, &mut out).then_some(out)
    }

    /// Writes the masked text of `value` into `out` (cleared first), reusing its buffer;
    /// false when the value is withheld altogether. This is the per-row path of a scan.
    pub fn apply_into(self, value: &str, out: &mut String) -> bool {
        out.clear();
        match self {
            Mask::Phone => keep_ends(value, 3, 4, 8, out),
            Mask::IdCardWide => keep_ends(value, 1, 2, 8, out),
            Mask::IdCardTrusted => keep_ends(value, 6, 4, 12, out),
            Mask::PersonName => out.push_str(&person_name(value)),
            Mask::Address => out.push_str(&address(value)),
            Mask::PlateNo => keep_ends(value, 1, 2, 4, out),
            Mask::Withheld => return false,
        }
        true
    }
}

/// Keeps `head` leading and `tail` trailing characters and stars the rest; values shorter
/// than `shortest` are starred completely.
fn keep_ends(value: &str, head: usize, tail: usize, shortest: usize, out: &mut String) {
    // Phone and ID numbers are ASCII: slice bytes instead of walking characters.
    if value.is_ascii() {
        let count = value.len();
        if count < shortest {
            out.extend(std::iter::repeat_n('*', count));
        } else {
            out.push_str(&value[..head]);
            out.extend(std::iter::repeat_n('*', count - head - tail));
            out.push_str(&value[count - tail..]);
        }
        return;
    }
    let count = value.chars().count();
    if count < shortest {
        out.extend(std::iter::repeat_n('*', count));
        return;
    }
    for (index, c) in value.chars().enumerate() {
        out.push(if index < head || index >= count - tail {
            c
        } else {
            '*'
        });
    }
}

/// Two-character surnames (复姓) in common use; the rest are one character.
const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "上官", "诸葛", "东方", "皇甫", "尉迟", "公孙", "慕容", "长孙", "宇文", "司徒",
    "夏侯", "令狐", "轩辕", "端木", "独孤", "南宫", "西门", "百里", "呼延", "万俟", "单于", "澹台",
    "公冶", "太史", "申屠", "钟离", "闻人", "赫连", "濮阳", "淳于", "宗政",
];

fn person_name(value: &str) -> String {
    let chars: Vec<char> = value.trim().chars().collect();
    if chars.len() <= 1 {
        return "*".repeat(chars.len());
    }
    let first_two: String = chars[..2].iter().collect();
    let surname = if chars.len() >= 3 && COMPOUND_SURNAMES.contains(&first_two.as_str()) {
        2
    } else {
        1
    };
    let mut out: String = chars[..surname].iter().collect();
    out.extend(std::iter::repeat_n('*', chars.len() - surname));
    out
}

/// Keeps the address down to its district or county: through the first `区`, `县` or `旗`;
/// failing those, through a county-level `市` that follows a prefecture (`内江市隆昌市`);
/// failing that, nothing. The rest becomes `****`.
fn address(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    // Only the leading part can hold the administrative divisions.
    let head = &chars[..chars.len().min(16)];
    let keep = head
        .iter()
        .position(|c| matches!(c, '区' | '县' | '旗'))
        .or_else(|| {
            let cities: Vec<usize> = head
                .iter()
                .enumerate()
                .filter_map(|(i, c)| (*c == '市').then_some(i))
                .collect();
            // `内江市市中区` has `市` twice but is caught above; here two `市` in a row of
            // divisions mean prefecture + county-level city.
            (cities.len() >= 2).then(|| cities[1])
        })
        .map(|index| index + 1)
        .unwrap_or(0);
    let mut out: String = chars[..keep].iter().collect();
    if keep < chars.len() {
        out.push_str("****");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_keep_three_and_four() {
        assert_eq!(
            Mask::Phone.apply("18012341999").as_deref(),
            Some("180****1999")
        );
        assert_eq!(Mask::Phone.apply("1234567").as_deref(), Some("*******"));
        assert_eq!(Mask::Phone.apply("").as_deref(), Some(""));
    }

    #[test]
    fn id_cards_keep_more_for_trusted_readers() {
        let id = "51102519900101123X";
        assert_eq!(
            Mask::IdCardWide.apply(id).as_deref(),
            Some("5***************3X")
        );
        assert_eq!(
            Mask::IdCardTrusted.apply(id).as_deref(),
            Some("511025********123X")
        );
        assert_eq!(Mask::IdCardTrusted.apply("12345").as_deref(), Some("*****"));
    }

    #[test]
    fn names_keep_the_surname() {
        assert_eq!(Mask::PersonName.apply("张三").as_deref(), Some("张*"));
        assert_eq!(Mask::PersonName.apply("张小明").as_deref(), Some("张**"));
        assert_eq!(Mask::PersonName.apply("欧阳修").as_deref(), Some("欧阳*"));
        assert_eq!(
            Mask::PersonName.apply("欧阳娜娜").as_deref(),
            Some("欧阳**")
        );
        // Two characters starting like a compound surname are surname + given name.
        assert_eq!(Mask::PersonName.apply("欧阳").as_deref(), Some("欧*"));
        assert_eq!(Mask::PersonName.apply("张").as_deref(), Some("*"));
    }

    #[test]
    fn addresses_keep_the_district_or_county() {
        assert_eq!(
            Mask::Address
                .apply("四川省内江市市中区玉溪路12号")
                .as_deref(),
            Some("四川省内江市市中区****")
        );
        assert_eq!(
            Mask::Address
                .apply("内江市威远县严陵镇建设路3号")
                .as_deref(),
            Some("内江市威远县****")
        );
        assert_eq!(
            Mask::Address
                .apply("内江市隆昌市金鹅街道古湖路8号")
                .as_deref(),
            Some("内江市隆昌市****")
        );
        assert_eq!(Mask::Address.apply("玉溪路12号").as_deref(), Some("****"));
    }

    #[test]
    fn plates_keep_the_province_and_last_two() {
        assert_eq!(Mask::PlateNo.apply("川K12345").as_deref(), Some("川****45"));
        assert_eq!(Mask::PlateNo.apply("川K1").as_deref(), Some("***"));
    }

    #[test]
    fn face_images_are_withheld() {
        assert_eq!(Mask::Withheld.apply("https://img/1.jpg"), None);
    }

    #[test]
    fn masks_keep_the_length_and_never_the_hidden_part() {
        for value in ["18012341999", "51102519900101123X", "川K12345", "司马相如"] {
            for mask in [
                Mask::Phone,
                Mask::IdCardWide,
                Mask::PlateNo,
                Mask::PersonName,
            ] {
                let masked = mask.apply(value).expect("text");
                assert_eq!(masked.chars().count(), value.chars().count());
                assert_ne!(masked, value);
            }
        }
    }
}

//! Administrative divisions (GB/T 2260) the hub knows: Neijiang and its county-level
//! regions, including retired codes that old devices still carry.

use serde::Serialize;

/// One administrative division.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Region {
    pub code: &'static str,
    pub name: &'static str,
    /// province, city, district, county or county-level city.
    pub level: &'static str,
    pub parent: Option<&'static str>,
    /// Still in use (`false` for retired codes such as 511028 隆昌县).
    pub current: bool,
    pub note: &'static str,
}

/// The region table, parsed once from `data/regions-neijiang.csv`.
pub fn regions() -> &'static [Region] {
    static REGIONS: std::sync::OnceLock<Vec<Region>> = std::sync::OnceLock::new();
    REGIONS.get_or_init(|| {
        include_str!("../data/regions-neijiang.csv")
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .filter_map(|line| {
                let fields: Vec<&'static str> = line.splitn(6, ',').collect();
                let [code, name, level, parent, status, note] = fields[..] else {
                    return None;
                };
                Some(Region {
                    code,
                    name,
                    level,
                    parent: (!parent.is_empty()).then_some(parent),
                    current: status == "current",
                    note,
                })
            })
            .collect()
    })
}

/// A region by its six-digit code.
pub fn region(code: &str) -> Option<&'static Region> {
    regions().iter().find(|r| r.code == code)
}

/// The current county-level regions under a city (for Neijiang: 511000).
pub fn counties_of(city: &str) -> Vec<&'static Region> {
    regions()
        .iter()
        .filter(|r| r.parent == Some(city) && r.current)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neijiang_has_five_current_county_level_regions_and_keeps_retired_codes() {
        let counties: Vec<&str> = counties_of("511000").iter().map(|r| r.name).collect();
        assert_eq!(
            counties,
            vec!["市中区", "东兴区", "威远县", "资中县", "隆昌市"]
        );
        let retired = region("511028").expect("retired code kept");
        assert!(!retired.current);
        assert_eq!(retired.name, "隆昌县");
        assert_eq!(region("511000").map(|r| r.level), Some("city"));
    }
}

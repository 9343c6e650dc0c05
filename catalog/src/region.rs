//! Administrative divisions (GB/T 2260) the hub knows: Neijiang and its county-level
//! regions, including retired codes that old devices still carry, and a few synthetic
//! towns per county for the demo city (9-digit codes, labelled as such in their note).
//!
//! A [`Scope`] is the part of the city a region-scoped principal (a county's or a town's
//! governance centre) may see: region codes inside it start with one of its prefixes.

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

/// The city the hub serves; scopes lie inside it.
pub const CITY: &str = "511000";

/// A region by its code (six digits, or nine for a town).
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

/// The code that replaced a retired region (recorded in the successor's note as
/// "... replaced 511028"), or the region's own code.
pub fn current_code(region: &'static Region) -> &'static str {
    if region.current {
        return region.code;
    }
    regions()
        .iter()
        .find(|r| r.current && r.note.contains(region.code))
        .map(|r| r.code)
        .unwrap_or(region.code)
}

/// The prefix a region code stands for: a town's nine digits as they are; for six-digit
/// codes trailing `00` pairs are levels not named (511000 → 5110, all of 内江).
pub fn code_prefix(code: &str) -> &str {
    if code.len() > 6 {
        return code;
    }
    let mut prefix = code;
    while prefix.len() > 2 && prefix.ends_with("00") {
        prefix = &prefix[..prefix.len() - 2];
    }
    prefix
}

/// The part of the city a principal is scoped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The scope's region (current: a retired code is replaced by its successor).
    pub region: &'static Region,
    /// A region code lies inside the scope when it starts with one of these: the scope's
    /// own prefix, and those of retired codes it replaced (rows still carrying 511028 are
    /// 隆昌市's).
    pub prefixes: Vec<String>,
}

impl Scope {
    /// The scope of `code`: the city, a county-level region or a town of the city. A code
    /// the hub does not know, or one outside the city, is refused with a sentence naming it.
    pub fn of(code: &str) -> Result<Scope, String> {
        let code = code.trim();
        let Some(named) = region(code) else {
            return Err(format!(
                "{code:?} is not a region the hub knows: use the city ({CITY}), one of its \
                 county-level regions (511002, 511011, 511024, 511025, 511083) or one of their \
                 towns (see hub.regions)"
            ));
        };
        let current = current_code(named);
        let region = region(current).unwrap_or(named);
        let inside_city = region.code == CITY
            || std::iter::successors(Some(region), |r| r.parent.and_then(self::region))
                .any(|r| r.parent == Some(CITY));
        if !inside_city {
            return Err(format!(
                "{code:?} ({}) lies outside the city {CITY}: a scope is the city, one of its \
                 county-level regions or one of their towns",
                region.name
            ));
        }
        let mut prefixes = vec![code_prefix(region.code).to_string()];
        for retired in regions().iter().filter(|r| !r.current) {
            if current_code(retired) == region.code {
                prefixes.push(code_prefix(retired.code).to_string());
            }
        }
        Ok(Scope { region, prefixes })
    }

    /// The scope's code (`511025`).
    pub fn code(&self) -> &'static str {
        self.region.code
    }

    /// Whether a region code (at any level) lies inside the scope.
    pub fn contains(&self, code: &str) -> bool {
        self.prefixes.iter().any(|p| code.starts_with(p.as_str()))
    }

    /// Whether every code inside `self` lies inside `other` (a town inside its county).
    pub fn within(&self, other: &Scope) -> bool {
        self.prefixes.iter().all(|p| other.contains(p))
    }

    /// The half-open ranges `[low, high)` of strings inside the scope: the strings
    /// starting with a prefix are exactly those from the prefix up to (not including) the
    /// prefix with its last digit raised, in byte order. Ranges prune files and row groups
    /// by their min/max, which a prefix test cannot.
    pub fn ranges(&self) -> Vec<(String, String)> {
        self.prefixes
            .iter()
            .map(|prefix| {
                let mut high = prefix.clone().into_bytes();
                if let Some(last) = high.last_mut() {
                    *last += 1;
                }
                (prefix.clone(), String::from_utf8_lossy(&high).into_owned())
            })
            .collect()
    }
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

    #[test]
    fn a_scope_is_the_city_a_county_or_a_town_and_covers_the_codes_under_it() {
        let city = Scope::of("511000").expect("city");
        assert_eq!(city.prefixes, vec!["5110"]);
        assert!(city.contains("511025100") && city.contains("511028") && !city.contains("510000"));
        let county = Scope::of("511025").expect("county");
        assert!(county.contains("511025") && county.contains("511025100123"));
        assert!(!county.contains("511024") && !county.contains("5110"));
        let town = Scope::of("511025100").expect("town");
        assert!(
            town.contains("511025100") && !town.contains("511025") && !town.contains("511025001")
        );
        assert!(town.within(&county) && county.within(&city) && !county.within(&town));
        // A retired code is its successor, whose rows still carrying the old code count.
        let longchang = Scope::of("511028").expect("retired");
        assert_eq!(longchang.code(), "511083");
        assert!(longchang.contains("51102800") && longchang.contains("511083"));
        assert_eq!(
            longchang.ranges()[0],
            ("511083".to_string(), "511084".to_string())
        );
        assert_eq!(
            Scope::of("511029").map_err(|e| e.contains("\"511029\"")),
            Err(true)
        );
        assert!(Scope::of("510000").is_err_and(|e| e.contains("outside the city")));
        assert!(Scope::of("").is_err());
    }
}

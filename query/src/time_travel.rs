//! Time travel: `dept.table FOR SYSTEM_TIME AS OF TIMESTAMP '2026-11-27 08:00:00+08:00'`
//! (SQL:2011) reads the snapshot that was current at that instant, and
//! `dept.table VERSION AS OF 42` reads snapshot 42.
//!
//! DataFusion's SQL dialect does not parse either clause, so before parsing the clause is
//! folded into the table's name: `dept."table@t1796160000000000"` (microseconds) or
//! `dept."table@v42"`. Table names are lowercase letters, digits and underscores, so the
//! `@` cannot clash with one; the department schema splits it off again and resolves the
//! snapshot with the same access rules, masking and audit as any read.

use chrono::{DateTime, Utc};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use crate::QueryError;

/// Which snapshot of a table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// The snapshot current at this instant.
    Time(DateTime<Utc>),
    /// The snapshot with this id.
    Snapshot(i64),
}

impl AsOf {
    fn suffix(self) -> String {
        match self {
            AsOf::Time(at) => format!("@t{}", at.timestamp_micros()),
            AsOf::Snapshot(id) => format!("@v{id}"),
        }
    }
}

/// Splits a table name the rewrite made (`events@t...`) into the table and its snapshot.
pub fn split_table_name(name: &str) -> (&str, Option<AsOf>) {
    let Some((table, version)) = name.split_once('@') else {
        return (name, None);
    };
    let as_of = if let Some(micros) = version.strip_prefix('t') {
        micros
            .parse()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .map(AsOf::Time)
    } else {
        version
            .strip_prefix('v')
            .and_then(|id| id.parse().ok())
            .map(AsOf::Snapshot)
    };
    match as_of {
        Some(as_of) => (table, Some(as_of)),
        None => (name, None),
    }
}

/// `sql` with every `FOR SYSTEM_TIME AS OF` / `VERSION AS OF` clause folded into its
/// table's name; unchanged (borrowed) when there is none.
pub fn rewrite(sql: &str) -> Result<std::borrow::Cow<'_, str>, QueryError> {
    // Cheap test first, without copying the SQL: almost no query travels in time.
    let mentions = |word: &str| {
        sql.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    };
    if !mentions("SYSTEM_TIME") && !mentions("VERSION") {
        return Ok(sql.into());
    }
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|err| QueryError::Invalid {
            message: format!("the SQL does not parse: {err}"),
            line: None,
            column: None,
        })?;
    let significant: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let offsets = Offsets::new(sql);
    let mut edits = Vec::new();
    for (index, token) in significant.iter().enumerate() {
        let rest = &significant[index..];
        let (as_of, taken) = if keywords(
            rest,
            &[Keyword::FOR, Keyword::SYSTEM_TIME, Keyword::AS, Keyword::OF],
        ) {
            (instant(&rest[4..])?, 4 + instant_tokens(&rest[4..]))
        } else if keywords(rest, &[Keyword::VERSION, Keyword::AS, Keyword::OF]) {
            (snapshot_id(rest.get(3).copied())?, 4)
        } else {
            continue;
        };
        let table = table_before(&significant[..index]).ok_or_else(|| {
            invalid(
                token,
                "FOR SYSTEM_TIME AS OF and VERSION AS OF must follow a dataset's name, \
                 e.g. gongan.events FOR SYSTEM_TIME AS OF TIMESTAMP '2026-11-27 08:00:00+08:00'",
            )
        })?;
        let Token::Word(word) = &table.token else {
            unreachable!("table_before only returns words")
        };
        let start = offsets.byte(table.span.start);
        let end = significant
            .get(index + taken)
            .map(|next| offsets.byte(next.span.start))
            .unwrap_or(sql.len());
        // Quoting keeps the suffix in the name; an unquoted name is folded to lowercase
        // first, as the planner would have done.
        let table = match word.quote_style {
            None => word.value.to_lowercase(),
            Some(_) => word.value.clone(),
        };
        let name = format!("{table}{}", as_of.suffix()).replace('"', "\"\"");
        edits.push((start, end, format!("\"{name}\" ")));
    }
    if edits.is_empty() {
        return Ok(sql.into());
    }
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for (start, end, text) in edits {
        out.push_str(&sql[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&sql[at..]);
    Ok(out.into())
}

fn keywords(tokens: &[&TokenWithSpan], expected: &[Keyword]) -> bool {
    tokens.len() >= expected.len()
        && tokens.iter().zip(expected).all(|(token, keyword)| {
            matches!(&token.token, Token::Word(w) if w.quote_style.is_none() && w.keyword == *keyword)
        })
}

/// The table name token of `dept.table` just before a clause, if that is what precedes it.
fn table_before<'a>(before: &[&'a TokenWithSpan]) -> Option<&'a TokenWithSpan> {
    match before {
        [.., department, period, table] => {
            let words = matches!(department.token, Token::Word(_))
                && matches!(period.token, Token::Period)
                && matches!(table.token, Token::Word(_));
            words.then_some(*table)
        }
        _ => None,
    }
}

/// How many tokens the instant takes: `TIMESTAMP '...'` or `'...'`.
fn instant_tokens(tokens: &[&TokenWithSpan]) -> usize {
    match tokens.first().map(|t| &t.token) {
        Some(Token::Word(w)) if w.keyword == Keyword::TIMESTAMP => 2,
        _ => 1,
    }
}

fn instant(tokens: &[&TokenWithSpan]) -> Result<AsOf, QueryError> {
    let literal = match tokens.first().map(|t| &t.token) {
        Some(Token::Word(w)) if w.keyword == Keyword::TIMESTAMP => tokens.get(1),
        _ => tokens.first(),
    };
    let example = "give the instant as TIMESTAMP '2026-11-27 08:00:00+08:00' (with its offset \
                   from UTC)";
    let Some(literal) = literal else {
        return Err(QueryError::Invalid {
            message: format!("FOR SYSTEM_TIME AS OF needs an instant: {example}"),
            line: None,
            column: None,
        });
    };
    let Token::SingleQuotedString(text) = &literal.token else {
        return Err(invalid(
            literal,
            &format!(
                "FOR SYSTEM_TIME AS OF takes a timestamp literal, not {}: {example}",
                literal.token
            ),
        ));
    };
    parse_instant(text)
        .map(AsOf::Time)
        .ok_or_else(|| invalid(literal, &format!("{text:?} is not an instant: {example}")))
}

/// RFC 3339, with a space or `T` between date and time; an offset is required, because a
/// bare time is ambiguous between the city's clock and UTC.
fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let normalised = match text.get(10..11) {
        Some(" ") => format!("{}T{}", &text[..10], &text[11..]),
        _ => text.to_string(),
    };
    let normalised = normalised.replace(" +", "+").replace(" -", "-");
    DateTime::parse_from_rfc3339(&normalised)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn snapshot_id(token: Option<&TokenWithSpan>) -> Result<AsOf, QueryError> {
    let id = match token.map(|t| &t.token) {
        Some(Token::Number(text, _)) => text.parse::<i64>().ok().filter(|id| *id > 0),
        _ => None,
    };
    id.map(AsOf::Snapshot).ok_or_else(|| QueryError::Invalid {
        message: "VERSION AS OF takes a snapshot id such as 42 (see GET \
                  /api/v1/datasets/{name}/snapshots or hub.snapshots)"
            .into(),
        line: token.map(|t| t.span.start.line),
        column: token.map(|t| t.span.start.column),
    })
}

fn invalid(token: &TokenWithSpan, message: &str) -> QueryError {
    QueryError::Invalid {
        message: format!(
            "{message} (line {}, column {})",
            token.span.start.line, token.span.start.column
        ),
        line: Some(token.span.start.line),
        column: Some(token.span.start.column),
    }
}

/// Byte offsets of (line, column) locations, columns counted in characters.
struct Offsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Self { sql, line_starts }
    }

    fn byte(&self, location: Location) -> usize {
        let Some(&line_start) = self
            .line_starts
            .get(location.line.saturating_sub(1) as usize)
        else {
            return self.sql.len();
        };
        self.sql[line_start..]
            .char_indices()
            .nth(location.column.saturating_sub(1) as usize)
            .map(|(i, _)| line_start + i)
            .unwrap_or(self.sql.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_fold_into_the_table_name_and_everything_else_stays() {
        let sql = "SELECT count(*) FROM gongan.events FOR SYSTEM_TIME AS OF TIMESTAMP \
                   '2026-11-27 08:00:00+08:00' AS e WHERE kind = '火灾 FOR SYSTEM_TIME'";
        assert_eq!(
            rewrite(sql).expect("rewrite"),
            "SELECT count(*) FROM gongan.\"events@t1795737600000000\" AS e WHERE kind = '火灾 FOR SYSTEM_TIME'"
        );
        let sql = "SELECT * FROM a.B VERSION AS OF 42 JOIN a.c ON true";
        assert_eq!(
            rewrite(sql).expect("rewrite"),
            "SELECT * FROM a.\"b@v42\" JOIN a.c ON true"
        );
        let plain = "SELECT version FROM a.b";
        assert!(matches!(rewrite(plain), Ok(std::borrow::Cow::Borrowed(_))));
    }

    #[test]
    fn names_round_trip_and_unknown_suffixes_are_left_alone() {
        let at = DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let name = format!("events{}", AsOf::Time(at).suffix());
        assert_eq!(split_table_name(&name), ("events", Some(AsOf::Time(at))));
        assert_eq!(
            split_table_name("events@v7"),
            ("events", Some(AsOf::Snapshot(7)))
        );
        assert_eq!(split_table_name("events@x"), ("events@x", None));
        assert_eq!(split_table_name("events"), ("events", None));
    }

    #[test]
    fn bad_clauses_are_refused_with_their_place() {
        for (sql, expected) in [
            (
                "SELECT * FROM gongan.events FOR SYSTEM_TIME AS OF TIMESTAMP '2026-11-27 08:00:00'",
                "is not an instant",
            ),
            (
                "SELECT * FROM gongan.events FOR SYSTEM_TIME AS OF now()",
                "takes a timestamp literal",
            ),
            (
                "SELECT * FROM events FOR SYSTEM_TIME AS OF '2026-11-27T00:00:00Z'",
                "must follow a dataset's name",
            ),
            (
                "SELECT * FROM gongan.events VERSION AS OF 'x'",
                "takes a snapshot id",
            ),
            (
                "SELECT * FROM gongan.events VERSION AS OF -1",
                "takes a snapshot id",
            ),
        ] {
            match rewrite(sql) {
                Err(QueryError::Invalid { message, .. }) => {
                    assert!(message.contains(expected), "{sql}: {message}")
                }
                other => panic!("{sql}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn instants_take_a_space_or_t_and_need_an_offset() {
        let expected = Some(
            DateTime::parse_from_rfc3339("2026-11-27T00:00:00Z")
                .expect("time")
                .with_timezone(&Utc),
        );
        assert_eq!(parse_instant("2026-11-27 08:00:00+08:00"), expected);
        assert_eq!(parse_instant("2026-11-27T08:00:00+08:00"), expected);
        assert_eq!(parse_instant("2026-11-27T00:00:00Z"), expected);
        assert_eq!(parse_instant("2026-11-27 08:00:00"), None);
    }
}

//! The catalog's tests, by domain, against a real SQLite database in a temp folder.

mod cameras;
mod datasets;
mod sharing;

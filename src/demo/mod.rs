//! The demo city (`cityhub serve --demo`): Neijiang's departments, datasets of synthetic
//! rows, 94,000 camera channels with a simulated platform, and the governance centre's
//! dashboard endpoints.
//!
//! - [`datasets`]: departments, datasets and their rows, tokens, sharing;
//! - [`cameras`]: the video network and the platform that keeps it alive;
//! - [`endpoints`]: the dashboards' saved queries.
//!
//! Everything is loaded through the same services as the HTTP API, on the hub's clock.

pub mod cameras;
pub mod datasets;
pub mod endpoints;

pub use datasets::{DemoCity, FULL_SCALE, load, load_scaled};

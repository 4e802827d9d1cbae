//! Generated files: each a pure function of a [`Deployment`], checked by golden tests.

pub mod compose;
pub mod ports;
pub mod proxy;
pub mod synapse;
pub mod well_known;

use super::model::Deployment;

/// One generated file, as the admin panel shows it (with copy and download).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// Stable identifier used in URLs (`/outputs/{id}`), e.g. `homeserver-yaml`.
    pub id: &'static str,
    /// Heading shown above it.
    pub title: String,
    /// Download file name.
    pub filename: String,
    /// Content type of the download.
    pub media_type: &'static str,
    /// Where it goes and what to do with it, in one or two sentences.
    pub intro: String,
    pub text: String,
}

/// Every output for this deployment, in the order the admin panel shows them.
pub fn all(deployment: &Deployment) -> Vec<Output> {
    let _ = deployment;
    Vec::new()
}

/// One output by its id.
pub fn by_id(deployment: &Deployment, id: &str) -> Option<Output> {
    all(deployment).into_iter().find(|o| o.id == id)
}

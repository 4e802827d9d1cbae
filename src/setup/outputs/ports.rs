//! (being written on branch wt-outputs; this placeholder only lets the admin panel compile)
use super::super::model::Deployment;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortForward {
    pub protocol: &'static str,
    pub external: String,
    pub internal: String,
    pub purpose: String,
    pub breaks_without: String,
    pub required: bool,
}

pub fn port_forwards(_d: &Deployment) -> Vec<PortForward> {
    Vec::new()
}

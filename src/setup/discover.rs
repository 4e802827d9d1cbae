//! (being written on branch wt-checks; this placeholder only lets the admin panel compile)
use std::collections::BTreeMap;
use std::net::IpAddr;

use super::fetch::HttpClient;
use super::model::SynapseVersion;
use crate::matrix::FederationClient;

pub struct HomeserverInfo {
    pub server_name: String,
    pub well_known: Option<serde_json::Map<String, serde_json::Value>>,
    pub well_known_problem: Option<String>,
    pub client_base_url: Option<String>,
    pub versions: Vec<String>,
    pub unstable_features: BTreeMap<String, bool>,
    pub synapse_version: Option<SynapseVersion>,
    pub server_software: Option<String>,
    pub notes: Vec<String>,
}

pub async fn homeserver(
    _http: &HttpClient,
    _federation: &FederationClient,
    server_name: &str,
    _base_url_override: Option<&str>,
) -> HomeserverInfo {
    HomeserverInfo {
        server_name: server_name.to_owned(),
        well_known: None,
        well_known_problem: None,
        client_base_url: None,
        versions: Vec::new(),
        unstable_features: BTreeMap::new(),
        synapse_version: None,
        server_software: None,
        notes: Vec::new(),
    }
}

pub fn lan_addresses() -> Vec<IpAddr> {
    Vec::new()
}

pub fn suggested_lan_ip() -> Option<IpAddr> {
    None
}

pub async fn public_ip(_stun_servers: &[String]) -> Result<IpAddr, String> {
    Err("not yet".into())
}

//! (being written on branch wt-checks; this placeholder only lets the admin panel compile)
pub struct HttpClient;
impl HttpClient {
    pub fn new(_extra_ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        Ok(HttpClient)
    }
}

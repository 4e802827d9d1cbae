//! (being written on branch wt-checks; this placeholder only lets the admin panel compile)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Warn,
    Unavailable,
}

#[derive(Clone, Debug)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

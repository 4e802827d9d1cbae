//! What homeservers answer (src/matrix): OpenID userinfo, federation version,
//! `.well-known/matrix/server` and `/client`, delayed-event answers, and server names. Whatever
//! the bytes, the parsers return; a user ID accepted is on the expected server; a server name
//! or client API URL that parses renders and parses back to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcbox::matrix::{
    ClientApiUrl, ServerName, classify, parse_client_well_known, parse_server_version,
    parse_userinfo, parse_well_known,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(user) = parse_userinfo(data, "example.org") {
        assert!(
            user.starts_with('@') && user.ends_with(":example.org"),
            "{user}"
        );
        assert!(user.len() > ":example.org".len() + 1);
    }
    if let Ok(software) = parse_server_version(data) {
        assert!(!software.name.is_empty() || !software.version.is_empty());
    }
    if let Some(name) = parse_well_known(data) {
        assert_eq!(ServerName::parse(name.as_str()).as_ref(), Ok(&name));
    }
    if let Ok(url) = parse_client_well_known(data) {
        assert_eq!(ClientApiUrl::parse(&url.as_string()).as_ref(), Ok(&url));
    }
    let _ = classify(429, None, data);
    let text = String::from_utf8_lossy(data);
    if let Ok(name) = ServerName::parse(&text) {
        assert_eq!(ServerName::parse(name.as_str()).as_ref(), Ok(&name));
        let _ = (name.tls_name(), name.is_localhost(), name.port());
    }
    if let Ok(url) = ClientApiUrl::parse(&text) {
        assert_eq!(ClientApiUrl::parse(&url.as_string()).as_ref(), Ok(&url));
    }
});

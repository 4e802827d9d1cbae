//! `/.well-known/matrix/client`: the JSON itself (the homeserver's existing document plus
//! rtcbox's `rtc_foci` entry) and how to serve it with the headers clients need.
//!
//! Invariants (tested): every key of the existing document survives; `m.homeserver.base_url` is
//! kept when present; the first `org.matrix.msc4143.rtc_foci` entry is rtcbox's, followed by the
//! other foci that were already there, without duplicates.

use serde_json::{Map, Value, json};

use super::{Output, underline, yaml_entry};
use crate::setup::model::Deployment;

pub const JSON_ID: &str = "well-known-client";
pub const ADD_ID: &str = "well-known-rtc-foci";
pub const SERVING_ID: &str = "well-known-serving";

/// The well-known key listing MatrixRTC backends ("foci"), read by Element X, Element Web and
/// older Element Call releases.
pub const RTC_FOCI_KEY: &str = "org.matrix.msc4143.rtc_foci";

/// The headers every answer at `/.well-known/matrix/client` needs. Element Call running inside
/// a client's web view fetches the document from another origin, so CORS is not optional.
pub const HEADERS: [(&str, &str); 4] = [
    ("Content-Type", "application/json"),
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, OPTIONS"),
    (
        "Access-Control-Allow-Headers",
        "X-Requested-With, Content-Type, Authorization",
    ),
];

/// rtcbox's entry in `rtc_foci` (and in Synapse's `matrix_rtc.transports`).
pub fn our_focus(d: &Deployment) -> Value {
    json!({"type": "livekit", "livekit_service_url": d.endpoints.livekit_service_url()})
}

/// The complete document: the existing one with `m.homeserver` ensured and rtcbox's focus first.
pub fn well_known_json(d: &Deployment) -> Value {
    let mut doc: Map<String, Value> = d.existing_well_known.clone().unwrap_or_default();

    match doc.get_mut("m.homeserver") {
        Some(Value::Object(homeserver)) => {
            let has_base_url = homeserver
                .get("base_url")
                .and_then(Value::as_str)
                .is_some_and(|url| !url.is_empty());
            if !has_base_url {
                homeserver.insert("base_url".into(), d.client_base_url.clone().into());
            }
        }
        // Absent, or not an object (which no client could use): write a correct one.
        _ => {
            doc.insert(
                "m.homeserver".into(),
                json!({"base_url": d.client_base_url}),
            );
        }
    }

    let ours = our_focus(d);
    let mut foci = vec![ours];
    if let Some(Value::Array(existing)) = doc.get(RTC_FOCI_KEY) {
        for focus in existing {
            if !foci.iter().any(|kept| same_focus(kept, focus)) {
                foci.push(focus.clone());
            }
        }
    }
    doc.insert(RTC_FOCI_KEY.into(), Value::Array(foci));
    Value::Object(doc)
}

pub fn client_json(d: &Deployment) -> Output {
    let mut text = serde_json::to_string_pretty(&well_known_json(d))
        .expect("a serde_json::Value always serializes");
    text.push('\n');
    Output {
        id: JSON_ID,
        title: "/.well-known/matrix/client".to_owned(),
        filename: "matrix-client-well-known.json".to_owned(),
        media_type: "application/json",
        intro: if d.existing_well_known.is_some() {
            format!(
                "Serve this document at https://{}/.well-known/matrix/client (the server_name's \
                 own domain), replacing the current one: it keeps every entry rtcbox read there \
                 and adds rtcbox as the first MatrixRTC focus.",
                well_known_host(d)
            )
        } else {
            format!(
                "rtcbox could not read a current document at https://{}/.well-known/matrix/client, \
                 so this one holds only m.homeserver and rtcbox's focus. Serve it as it is only if \
                 there is no such file yet. If there is one, replacing it would drop its other \
                 entries: add rtcbox's entry to it instead (next), or paste it into the box below \
                 and the complete document is generated here.",
                well_known_host(d)
            )
        },
        text,
    }
}

/// When rtcbox could not read the current document (discovery failed): only the entry to add
/// to it, so nothing the admin's file holds is lost. `None` when the document was read.
pub fn add_only(d: &Deployment) -> Option<Output> {
    if d.existing_well_known.is_some() {
        return None;
    }
    let foci = serde_json::to_string_pretty(&Value::Array(vec![our_focus(d)]))
        .expect("a serde_json::Value always serializes");
    let mut text = format!(
        "Add this entry to the top-level object of your current\n\
         https://{}/.well-known/matrix/client, with a comma between it and the entry\n\
         before it. If the file already has \"{RTC_FOCI_KEY}\", put rtcbox's entry\n\
         first in that list instead. Keep everything else as it is.\n\n  \"{RTC_FOCI_KEY}\": ",
        well_known_host(d)
    );
    text += &foci.replace('\n', "\n  ");
    text.push('\n');
    Some(Output {
        id: ADD_ID,
        title: "Add rtcbox to your current well-known".to_owned(),
        filename: "well-known-rtc-foci.txt".to_owned(),
        media_type: "text/plain",
        intro: "Only the entry rtcbox needs, for the well-known document you already serve."
            .to_owned(),
        text,
    })
}

pub fn serving(d: &Deployment) -> Output {
    Output {
        id: SERVING_ID,
        title: "Serving the well-known document".to_owned(),
        filename: "well-known-serving.txt".to_owned(),
        media_type: "text/plain",
        intro: format!(
            "How to publish the well-known document on https://{}/ with the content type and \
             CORS headers clients need, for nginx, Apache, Caddy, Synology DSM and Synapse itself.",
            well_known_host(d)
        ),
        text: serving_text(d),
    }
}

/// The nginx `location` block that answers with the document itself (no file needed). It is a
/// complete block, valid inside any `server { }`.
pub fn nginx_location(d: &Deployment) -> String {
    // nginx expands `$variables` even in single-quoted strings and reads `\` as an escape, so
    // `$` and `'` become JSON \u escapes and every remaining backslash is doubled.
    let json = compact_json(&well_known_json(d), |c| matches!(c, '$' | '\''));
    let body = json.replace('\\', "\\\\");
    let mut out = String::from("location = /.well-known/matrix/client {\n");
    out += "    default_type application/json;\n";
    for (name, value) in &HEADERS[1..] {
        out += &format!("    add_header {name} \"{value}\" always;\n");
    }
    out += &format!("    return 200 '{body}';\n");
    out += "}\n";
    out
}

/// Two foci are the same when they are equal, or both LiveKit with the same service URL (a
/// trailing slash aside).
fn same_focus(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let livekit_url = |v: &Value| -> Option<String> {
        let obj = v.as_object()?;
        if obj.get("type")?.as_str()? != "livekit" {
            return None;
        }
        let url = obj.get("livekit_service_url")?.as_str()?;
        Some(url.trim_end_matches('/').to_owned())
    };
    matches!((livekit_url(a), livekit_url(b)), (Some(x), Some(y)) if x == y)
}

/// Compact JSON in which every character `escape` picks (inside strings; only ASCII
/// punctuation is asked for) is written as a `\uXXXX` escape, for embedding the document in
/// another file format's string literal.
fn compact_json(value: &Value, escape: impl Fn(char) -> bool + Copy) -> String {
    match value {
        Value::String(s) => {
            let mut out = String::from("\"");
            for c in s.chars() {
                if escape(c) {
                    out += &format!("\\u{:04x}", u32::from(c));
                } else {
                    let quoted =
                        serde_json::to_string(&c.to_string()).expect("a string always serializes");
                    out += &quoted[1..quoted.len() - 1];
                }
            }
            out.push('"');
            out
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|i| compact_json(i, escape)).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        compact_json(&Value::String(k.clone()), escape),
                        compact_json(v, escape)
                    )
                })
                .collect();
            format!("{{{}}}", entries.join(","))
        }
        scalar => scalar.to_string(),
    }
}

/// Where clients fetch the well-known: the server name's host on port 443, whatever port the
/// server name carries (a port there is for federation only).
pub fn well_known_host(d: &Deployment) -> String {
    crate::matrix::ServerName::parse(&d.server_name)
        .map(|name| name.host().to_string())
        .unwrap_or_else(|_| d.server_name.clone())
}

fn serving_text(d: &Deployment) -> String {
    let server = &well_known_host(d);
    let server_name = &d.server_name;
    let doc = well_known_json(d);
    let mut out = underline(
        &format!("Serving https://{server}/.well-known/matrix/client"),
        '=',
    );
    out += &format!(
        "\n\
         Clients look for this document on the server_name's own domain, {server}, port 443\n\
         (user IDs look like @alice:{server_name}). It is NOT looked up on the host\n\
         Synapse runs on (often matrix.{server}); publishing rtc_foci only there is the most\n\
         common reason calls fail with MISSING_MATRIX_RTC_FOCUS or \"Call is not supported\".\n\
         \n\
         Every answer needs these headers, each exactly once (a header added both by the web\n\
         server and by a proxy in front of it appears twice, and browsers reject a doubled\n\
         Access-Control-Allow-Origin):\n\
         \n"
    );
    for (name, value) in HEADERS {
        out += &format!("    {name}: {value}\n");
    }
    out += &format!(
        "\n\
         The document is in matrix-client-well-known.json. Check the result from outside:\n\
         \n\
         \x20   curl -i https://{server}/.well-known/matrix/client\n\
         \n\
         Use ONE of the following.\n\
         \n"
    );

    out += &underline("nginx", '-');
    out += &format!(
        "\n\
         Put this block inside the server {{ }} block that answers for {server} on port 443\n\
         (server_name {server};). It answers with the document itself; no file is needed.\n\
         nginx's add_header lines here replace those of the server block for this one URL, so\n\
         repeat any you rely on (e.g. Strict-Transport-Security). Then: nginx -t && nginx -s reload\n\
         \n"
    );
    out += &nginx_location(d);
    out += "\n";

    out += &underline("Apache httpd", '-');
    out += &format!(
        "\n\
         Save matrix-client-well-known.json as /var/www/matrix-well-known/client.json and add\n\
         this to the <VirtualHost *:443> of {server}. Needs mod_alias, mod_mime and mod_headers\n\
         (a2enmod alias mime headers). Then: apachectl configtest && apachectl graceful\n\
         \n\
         Alias \"/.well-known/matrix/client\" \"/var/www/matrix-well-known/client.json\"\n\
         <Directory \"/var/www/matrix-well-known\">\n\
         \x20   Require all granted\n\
         </Directory>\n\
         <Location \"/.well-known/matrix/client\">\n\
         \x20   ForceType application/json\n"
    );
    for (name, value) in &HEADERS[1..] {
        out += &format!("    Header always set {name} \"{value}\"\n");
    }
    out += "</Location>\n\n";

    out += &underline("Caddy", '-');
    // Backtick strings are raw in a Caddyfile; escape the backtick itself, and the characters
    // Caddy treats as placeholders ({...}) or environment variables ({$...}).
    let json = compact_json(&doc, |c| matches!(c, '`' | '{' | '}' | '$'));
    out += &format!(
        "\n\
         Put the handle block inside the existing site block for {server} in your Caddyfile\n\
         (shown around it), then: caddy reload\n\
         \n\
         {server} {{\n\
         \x20   handle /.well-known/matrix/client {{\n"
    );
    for (name, value) in HEADERS {
        out += &format!("        header {name} \"{value}\"\n");
    }
    out += &format!(
        "        respond `{json}` 200\n\
         \x20   }}\n\
         \x20   # ... the rest of your site ...\n\
         }}\n\
         \n"
    );

    out += &underline("Synology DSM", '-');
    out += &format!(
        "\n\
         DSM's reverse proxy only forwards requests; it can neither answer with a file nor add\n\
         response headers. So the document must come from something behind it. Choose one:\n\
         \n\
         a) Synapse answers it (see the next section) and {server} is forwarded to Synapse:\n\
         \x20  Control Panel > Login Portal > Advanced > Reverse Proxy > Create, source HTTPS\n\
         \x20  {server} port 443, destination your Synapse (e.g. HTTP localhost 8008). Such a\n\
         \x20  rule sends ALL of https://{server}/ to Synapse, so use it only when nothing else\n\
         \x20  (a website) lives there. If {server} already points at Synapse, nothing changes.\n\
         b) Web Station serves it as a static file with an Apache back end, which honours\n\
         \x20  .htaccess files:\n\
         \x20  1. Package Center: install Web Station and \"Apache HTTP Server 2.4\".\n\
         \x20  2. Web Station > Web Service Portal > Create: a name-based portal for {server}\n\
         \x20     on HTTPS port 443, with a static website service using the Apache 2.4 back end\n\
         \x20     and a document root such as /volume1/web/{server}.\n\
         \x20  3. In File Station, create the folder .well-known/matrix inside that document root\n\
         \x20     and save matrix-client-well-known.json there under the name client (no\n\
         \x20     extension).\n\
         \x20  4. In the same folder, create a file named .htaccess containing:\n\
         \n\
         \x20       <Files \"client\">\n\
         \x20           ForceType application/json\n"
    );
    for (name, value) in &HEADERS[1..] {
        out += &format!("            Header always set {name} \"{value}\"\n");
    }
    out += &format!(
        "        </Files>\n\
         \n\
         \x20  5. Assign the {server} certificate to the portal in Control Panel > Security >\n\
         \x20     Certificate > Settings.\n\
         \x20  Check the headers with the curl command above; if the Access-Control-* headers\n\
         \x20  are missing, the Apache back end is not the one serving the portal.\n\
         c) Any other web server you run for {server} (nginx, Apache, Caddy above).\n\
         \n"
    );

    out += &underline("Synapse (extra_well_known_client_content)", '-');
    out += &format!(
        "\n\
         Synapse can answer /.well-known/matrix/client itself, with the CORS headers. This only\n\
         helps when https://{server}/.well-known/matrix/client actually reaches Synapse, i.e.\n\
         your proxy for {server} forwards that path to it. Synapse serves the document when\n\
         public_baseurl is set (it becomes m.homeserver.base_url) or serve_client_wellknown is\n\
         true. Add this to homeserver.yaml (merge with an existing extra_well_known_client_content)\n\
         and restart Synapse:\n\
         \n"
    );
    let mut synapse_yaml = String::new();
    let mut extra = Map::new();
    extra.insert(RTC_FOCI_KEY.into(), doc[RTC_FOCI_KEY].clone());
    yaml_entry(
        &mut synapse_yaml,
        0,
        "extra_well_known_client_content",
        &Value::Object(extra),
    );
    out += &synapse_yaml;
    out += "\n\
            Other entries of your current document (identity server, Element settings) must then\n\
            come from Synapse too: default_identity_server, or more extra_well_known_client_content.\n";
    out
}

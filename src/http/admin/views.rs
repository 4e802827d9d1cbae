//! Page models (askama templates in web/templates) and the responses every handler shares.

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};

/// What the base layout needs on every page.
pub struct Layout {
    pub title: String,
    /// The navigation entry to highlight.
    pub active: &'static str,
    /// The CSRF token forms on this page carry (the logout button has one too).
    pub csrf: String,
    pub logged_in: bool,
}

/// Shown in the footer.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Layout {
    pub fn is_active(&self, id: &str) -> bool {
        self.active == id
    }

    /// For the setup and login pages, before there is a session.
    pub fn public(title: &str, csrf: &str) -> Self {
        Layout {
            title: title.to_owned(),
            active: "",
            csrf: csrf.to_owned(),
            logged_in: false,
        }
    }
}

pub const NAV: [(&str, &str, &str); 7] = [
    ("dashboard", "/", "Dashboard"),
    ("wizard", "/wizard", "Setup"),
    ("outputs", "/outputs", "Configuration"),
    ("verify", "/verify", "Verify"),
    ("logs", "/logs", "Logs"),
    ("settings", "/settings", "Settings"),
    ("backup", "/backup", "Backup"),
];

/// Field name → message.
pub type Errors = BTreeMap<&'static str, String>;

#[derive(Template)]
#[template(path = "setup.html")]
pub struct SetupPage {
    pub layout: Layout,
    pub expired: bool,
    pub error: Option<String>,
    pub errors: Errors,
    /// The token as given (typed, or from the setup URL).
    pub token: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub layout: Layout,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub layout: Layout,
    pub status: u16,
    pub message: String,
}

/// One form field as the templates draw it.
#[derive(Clone, Debug, Default)]
pub struct Field {
    pub name: &'static str,
    pub label: String,
    /// `text`, `number`, `password`, `email`, `radio`, `select`, `checkbox` (value `yes`).
    pub kind: &'static str,
    pub value: String,
    pub help: String,
    pub error: Option<String>,
    /// For radio and select: (value, label).
    pub options: Vec<(String, String)>,
    pub placeholder: String,
    /// `field=value`: only relevant when that radio/select has that value (JS hides it otherwise).
    pub show_when: String,
    pub required: bool,
    /// For text fields: values the browser offers while typing (a `<datalist>`).
    pub suggestions: Vec<String>,
}

impl Field {
    pub fn text(name: &'static str, label: &str, value: &str) -> Self {
        Field {
            name,
            label: label.to_owned(),
            kind: "text",
            value: value.to_owned(),
            ..Field::default()
        }
    }

    pub fn choice(
        name: &'static str,
        kind: &'static str,
        label: &str,
        value: &str,
        options: &[(&str, &str)],
    ) -> Self {
        Field {
            name,
            label: label.to_owned(),
            kind,
            value: value.to_owned(),
            options: options
                .iter()
                .map(|(v, l)| ((*v).to_owned(), (*l).to_owned()))
                .collect(),
            ..Field::default()
        }
    }

    /// A heading that groups the fields after it.
    pub fn heading(label: &str) -> Self {
        Field {
            label: label.to_owned(),
            kind: "heading",
            ..Field::default()
        }
    }

    /// The start of a folded group of the fields after it ("Advanced"), open when `open`.
    pub fn advanced(summary: &str, open: bool) -> Self {
        Field {
            label: summary.to_owned(),
            kind: "advanced",
            value: if open { "open" } else { "" }.to_owned(),
            ..Field::default()
        }
    }

    /// The end of the group [`Field::advanced`] began.
    pub fn advanced_end() -> Self {
        Field {
            kind: "advanced-end",
            ..Field::default()
        }
    }

    /// An extra submit button in the flow of the form (`action=<value>`).
    pub fn action(value: &str, label: &str) -> Self {
        Field {
            label: label.to_owned(),
            kind: "action",
            value: value.to_owned(),
            ..Field::default()
        }
    }

    pub fn help(mut self, help: &str) -> Self {
        self.help = help.to_owned();
        self
    }

    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = kind;
        self
    }

    pub fn placeholder(mut self, placeholder: &str) -> Self {
        self.placeholder = placeholder.to_owned();
        self
    }

    pub fn show_when(mut self, condition: &str) -> Self {
        self.show_when = condition.to_owned();
        self
    }

    pub fn suggestions(mut self, values: impl IntoIterator<Item = String>) -> Self {
        self.suggestions = values.into_iter().collect();
        self
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn with_errors(mut self, errors: &Errors) -> Self {
        self.error = errors.get(self.name).cloned();
        self
    }

    /// An id for `<label for>` and `aria-describedby`.
    pub fn id(&self) -> String {
        format!("f-{}", self.name)
    }
}

/// Renders a page; a template error (a bug) becomes a generic 500 page.
pub fn render<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(html) => html_response(StatusCode::OK, html),
        Err(error) => internal_error("rendering a page", &error),
    }
}

fn html_response(status: StatusCode, html: String) -> Response {
    let mut response = (status, html).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// A page that explains a refusal in plain words.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let page = ErrorPage {
        layout: Layout::public("Error", ""),
        status: status.as_u16(),
        message: message.to_owned(),
    };
    match page.render() {
        Ok(html) => html_response(status, html),
        Err(_) => (status, message.to_owned()).into_response(),
    }
}

/// A failure of ours: the cause is logged once; the page says only that something went wrong.
pub fn internal_error(doing: &str, error: &dyn std::fmt::Display) -> Response {
    tracing::error!(%error, "admin panel: failed {doing}");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!(
            "Something went wrong while {doing}. Nothing was changed; the log page or rtcbox's \
             log says why."
        ),
    )
}

/// A URL-encoded form as field → value. A body that is not a form gets a clear 400/415 page
/// instead of axum's plain-text rejection.
pub struct FormData(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<Vec<(String, String)>>::from_request(request, state).await {
            Ok(axum::Form(pairs)) => Ok(FormData(pairs.into_iter().collect())),
            Err(rejection) => Err(error_response(
                rejection.status(),
                "The form could not be read. Reload the page and submit it again; nothing was changed.",
            )),
        }
    }
}

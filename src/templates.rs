//! minijinja templates for mail and pages: built into the binary, and each one
//! overridable by a file of the same relative name under `GATEHOUSE_TEMPLATES_DIR`.
//! `.html` templates auto-escape; `.txt` ones do not.

use std::path::PathBuf;

use minijinja::Environment;

/// The built-in templates, by the name they are rendered under.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "email/sign_in/subject.txt",
        include_str!("../templates/email/sign_in/subject.txt"),
    ),
    (
        "email/sign_in/text.txt",
        include_str!("../templates/email/sign_in/text.txt"),
    ),
    (
        "email/sign_in/html.html",
        include_str!("../templates/email/sign_in/html.html"),
    ),
    (
        "pages/layout.html",
        include_str!("../templates/pages/layout.html"),
    ),
    (
        "pages/confirm.html",
        include_str!("../templates/pages/confirm.html"),
    ),
    (
        "pages/signed_in.html",
        include_str!("../templates/pages/signed_in.html"),
    ),
    (
        "pages/error.html",
        include_str!("../templates/pages/error.html"),
    ),
    (
        "console/layout.html",
        include_str!("../templates/console/layout.html"),
    ),
    (
        "console/macros.html",
        include_str!("../templates/console/macros.html"),
    ),
    (
        "console/message.html",
        include_str!("../templates/console/message.html"),
    ),
    (
        "console/sign_in.html",
        include_str!("../templates/console/sign_in.html"),
    ),
    (
        "console/sign_in_sent.html",
        include_str!("../templates/console/sign_in_sent.html"),
    ),
    (
        "console/overview.html",
        include_str!("../templates/console/overview.html"),
    ),
    (
        "console/roster.html",
        include_str!("../templates/console/roster.html"),
    ),
    (
        "console/roster_report.html",
        include_str!("../templates/console/roster_report.html"),
    ),
    (
        "console/members.html",
        include_str!("../templates/console/members.html"),
    ),
    (
        "console/member.html",
        include_str!("../templates/console/member.html"),
    ),
    (
        "console/member_new.html",
        include_str!("../templates/console/member_new.html"),
    ),
    (
        "console/key_issued.html",
        include_str!("../templates/console/key_issued.html"),
    ),
    (
        "console/roles.html",
        include_str!("../templates/console/roles.html"),
    ),
    (
        "console/api_keys.html",
        include_str!("../templates/console/api_keys.html"),
    ),
    (
        "console/audit.html",
        include_str!("../templates/console/audit.html"),
    ),
    (
        "console/mail.html",
        include_str!("../templates/console/mail.html"),
    ),
    (
        "member/layout.html",
        include_str!("../templates/member/layout.html"),
    ),
    (
        "member/sign_in.html",
        include_str!("../templates/member/sign_in.html"),
    ),
    (
        "member/wait.html",
        include_str!("../templates/member/wait.html"),
    ),
    (
        "member/account.html",
        include_str!("../templates/member/account.html"),
    ),
    (
        "pages/confirm_other_device.html",
        include_str!("../templates/pages/confirm_other_device.html"),
    ),
];

pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Loads every template once, so a broken override fails at start-up, not in a request.
    pub fn new(override_dir: Option<PathBuf>) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        env.set_loader(move |name| {
            if let Some(dir) = &override_dir {
                let path = dir.join(name);
                if path.is_file() {
                    return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                        minijinja::Error::new(
                            minijinja::ErrorKind::InvalidOperation,
                            format!("{}: {e}", path.display()),
                        )
                    });
                }
            }
            Ok(EMBEDDED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, text)| (*text).to_owned()))
        });
        env.add_filter("datetime", |unix: i64| {
            format_time(unix, "%-d %b %Y, %H:%M UTC")
        });
        env.add_filter("date", |unix: i64| format_time(unix, "%-d %b %Y"));
        env.add_filter("iso", |unix: i64| format_time(unix, "%Y-%m-%dT%H:%M:%SZ"));
        for (name, _) in EMBEDDED {
            env.get_template(name)?;
        }
        Ok(Self { env })
    }

    pub fn render(
        &self,
        name: &str,
        context: impl serde::Serialize,
    ) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }
}

/// A unix time in UTC, for pages (`{{ t | datetime }}`, `| date`, `| iso`).
fn format_time(unix: i64, format: &str) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

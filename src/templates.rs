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

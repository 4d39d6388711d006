//! A person in a real browser: opens the mailed link in headless Chromium and
//! clicks the button, as a member would.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp};

/// A chromedriver process, killed when dropped.
pub struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver; .ci/run does it)");
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn connect(driver: &Driver, profile: &std::path::Path) -> fantoccini::Client {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let capabilities = capabilities.as_object().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(client) => return client,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("cannot start Chromium through chromedriver: {error}"),
        }
    }
}

async fn member_clicks_sign_in_in_a_real_browser(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let mail = app.next_mail_to(ADMIN).await;

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = connect(&driver, profile.path()).await;
    browser.goto(&mail.link).await.unwrap();
    // Opening the page consumed nothing; the click does.
    browser
        .find(Locator::Css("button#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let heading = browser
        .wait()
        .for_element(Locator::Id("signed-in"))
        .await
        .unwrap();
    assert_eq!(heading.text().await.unwrap(), "You are signed in");
    let token = browser
        .find(Locator::Id("access-token"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .expect("access token shown");
    assert_eq!(app.claims(&token).roles, ["admin", "member"]);

    // Back and click again: the link is spent.
    browser.back().await.unwrap();
    browser.goto(&mail.link).await.unwrap();
    browser
        .find(Locator::Css("button#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let error = browser
        .wait()
        .for_element(Locator::Id("error"))
        .await
        .unwrap();
    assert_eq!(error.text().await.unwrap(), "This link does not work");
    browser.close().await.unwrap();
}

backend_tests!(member_clicks_sign_in_in_a_real_browser);

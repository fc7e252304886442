//! The console in a real browser: Debian's `chromium` driven through `chromedriver`
//! (WebDriver) against a real all-in-one platform with the demo data. Without chromedriver
//! the test prints a notice and passes, unless `CONSOLE_BROWSER_REQUIRED=1` (CI sets it
//! once it installs `chromium-driver`). With `CONSOLE_SCREENSHOTS=<dir>` it saves
//! screenshots of the main pages there (`scripts/screenshots.sh`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use metatron::Settings;
use platform::password::HashParams;
use platform::testing::TestDatabases;
use serde_json::json;

fn chromedriver() -> Option<PathBuf> {
    let name = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let path = PathBuf::from(&name);
    if path.is_absolute() {
        return path.exists().then_some(path);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(&name))
            .find(|p| p.exists())
    })
}

/// The platform with the console merged in front, as `App::router()` serves it.
async fn start_site(dbs: &TestDatabases) -> (String, metatron::commands::Running) {
    let mut settings = Settings {
        data_dir: dbs.data_dir(),
        password: HashParams {
            concurrency: 2,
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..Settings::default()
    };
    settings.cdx.database.url = Some(dbs.url("cdx"));
    settings.auth.database.url = Some(dbs.url("auth"));
    settings.crm.database.url = Some(dbs.url("crm"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = metatron::commands::start(settings, true, listener)
        .await
        .expect("platform starts");
    let platform_base = format!("http://{}", running.addr);
    // Once `App::router()` serves the console itself, drive exactly that.
    let wired = reqwest::get(format!("{platform_base}/console/static/console.css"))
        .await
        .is_ok_and(|r| r.status().is_success());
    if wired {
        return (platform_base, running);
    }
    let api = running.app.router();
    let router = console::router(
        console::ApiClient::in_process(api.clone()),
        console::ConsoleSettings::default(),
    )
    .merge(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(platform::http::serve(
        listener,
        router,
        std::future::pending(),
    ));
    (base, running)
}

/// chromedriver on a free port; killed when dropped.
async fn start_driver(path: &PathBuf) -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = tokio::process::Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver starts");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, format!("http://127.0.0.1:{port}"))
}

async fn open_browser(driver: &str) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900"] }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .expect("a browser session")
}

struct Tour {
    c: Client,
    base: String,
    shots: Option<PathBuf>,
}

impl Tour {
    async fn go(&self, path: &str) {
        self.c
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("goto");
    }

    async fn fill(&self, css: &str, text: &str) {
        let el = self.c.find(Locator::Css(css)).await.expect(css);
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.c
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .expect("click");
    }

    async fn source(&self) -> String {
        self.c.source().await.expect("source")
    }

    /// Waits until the page shows `text` (a submitted form's answer may still be loading).
    async fn expect(&self, text: &str) {
        self.wait_for(text, |source| source.contains(text)).await;
    }

    /// Waits (5 s at most) until `found` holds for the page's source; `what` names it.
    async fn wait_for(&self, what: &str, found: impl Fn(&str) -> bool) {
        for _ in 0..50 {
            if found(&self.source().await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {what:?}: {}", self.source().await);
    }

    /// Waits until a row the live tail added (not one the page was served with) shows
    /// `text`: an entry committed earlier may arrive live too.
    async fn expect_live(&self, text: &str) {
        let live_row = |source: &str| {
            source
                .split(r#"<tr class="live">"#)
                .skip(1)
                .any(|row| row.split("</tr>").next().is_some_and(|r| r.contains(text)))
        };
        self.wait_for(&format!("a live row with {text}"), live_row)
            .await;
    }

    async fn path(&self) -> String {
        self.c.current_url().await.expect("url").path().to_string()
    }

    async fn login(&self, user: &str, password: &str) {
        self.go("/console/login").await;
        self.fill("#f-username", user).await;
        self.fill("#f-password", password).await;
        self.click("main button[type=submit]").await;
    }

    async fn logout(&self) {
        self.click("header form[action='/console/logout'] button")
            .await;
        self.expect("You are logged out.").await;
    }

    async fn shot(&self, name: &str) {
        if let Some(dir) = &self.shots {
            let png = self.c.screenshot().await.expect("screenshot");
            std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
        }
    }
}

#[tokio::test]
async fn the_console_in_chromium() {
    let Some(driver_path) = chromedriver() else {
        if std::env::var("CONSOLE_BROWSER_REQUIRED").as_deref() == Ok("1") {
            panic!("chromedriver is missing (apt-get install chromium chromium-driver)");
        }
        println!("SKIPPED: chromedriver not found; install Debian's chromium and chromium-driver to run the browser test");
        return;
    };
    let dbs = TestDatabases::new();
    let (base, running) = start_site(&dbs).await;
    let (_driver, driver_url) = start_driver(&driver_path).await;
    let shots = std::env::var_os("CONSOLE_SCREENSHOTS").map(PathBuf::from);
    if let Some(dir) = &shots {
        std::fs::create_dir_all(dir).expect("screenshot folder");
    }
    let t = Tour {
        c: open_browser(&driver_url).await,
        base,
        shots,
    };

    // The login page, and a wrong password.
    t.go("/").await;
    assert_eq!(t.path().await, "/console/login");
    t.shot("login").await;
    t.login("test", "wrong-password").await;
    t.expect("Wrong user name, email, password or tenant.")
        .await;

    // The superadmin lands on the overview, creates a tenant and sees it there.
    t.login("test", "test123").await;
    t.expect("Platform overview").await;
    assert_eq!(t.path().await, "/console/overview");
    t.expect("<svg").await;
    t.shot("overview").await;
    t.go("/console/tenants").await;
    t.fill("#f-slug", "acme").await;
    t.fill("#f-name", "Acme Corp").await;
    t.click("#create button[type=submit]").await;
    t.expect("Tenant acme created.").await;
    assert_eq!(t.path().await, "/console/tenants/acme");
    t.expect("Tenant acme created.").await;
    t.shot("tenant").await;
    t.go("/console/overview").await;
    t.expect("Acme Corp").await;
    t.go("/console/tenants").await;
    t.shot("tenants").await;
    t.go("/console/clients").await;
    t.fill("#f-name", "Initech").await;
    t.click("#create button[type=submit]").await;
    t.expect("Client Initech created.").await;
    t.shot("clients").await;
    // The audit page's live tail shows a login made meanwhile, without a reload.
    t.go("/console/audit").await;
    t.expect("data-connected").await;
    let login = reqwest::Client::new()
        .post(format!("{}/api/auth/login", t.base))
        .json(&json!({"username": "john.doe@demo.com", "password": "demo123"}))
        .send()
        .await
        .expect("login");
    assert!(login.status().is_success());
    t.expect_live("auth.login.succeeded").await;
    t.shot("audit").await;
    t.logout().await;

    // The tenant admin creates a user.
    t.login("jane.smith@demo.com", "demo123").await;
    t.expect("<h1>Customers</h1>").await;
    assert_eq!(t.path().await, "/console/customers");
    t.go("/console/users").await;
    t.fill("#f-email", "ann.lee@demo.com").await;
    t.fill("#f-name", "Ann Lee").await;
    t.fill("#f-password", "a-long-password").await;
    t.click("#create button[type=submit]").await;
    t.expect("User ann.lee@demo.com created.").await;
    t.shot("users").await;
    t.go("/console/settings").await;
    t.fill("#pipelines input[name=name][id^=stage-name-]", "Demo call")
        .await;
    t.click("#pipelines form[action$='/stages'] button[type=submit]")
        .await;
    t.expect("Stage Demo call added to Sales.").await;
    t.shot("settings").await;
    t.logout().await;

    // The new user logs in, creates a customer, adds a note, moves a deal.
    t.login("ann.lee@demo.com", "a-long-password").await;
    t.expect("<h1>Customers</h1>").await;
    assert_eq!(t.path().await, "/console/customers");
    t.go("/console/customers/new").await;
    t.fill("#f-first_name", "Ada").await;
    t.fill("#f-last_name", "Lovelace").await;
    t.fill("#f-email", "ada@example.com").await;
    t.fill("#f-tags", "vip, math").await;
    t.click("main form button[type=submit]").await;
    t.expect("Customer Ada Lovelace created.").await;
    t.fill("#f-body", "Called about the analytical engine.")
        .await;
    t.click("form[action$='/notes'] button[type=submit]").await;
    t.expect("Note added.").await;
    t.expect("Called about the analytical engine.").await;
    t.shot("customer").await;
    t.go("/console/customers").await;
    t.shot("customers").await;
    t.go("/console/deals").await;
    let select =
        t.c.find(Locator::Css(".deal select"))
            .await
            .expect("a deal");
    select.select_by_index(1).await.expect("choose a stage");
    t.click(".deal button[type=submit]").await;
    t.expect("moved.").await;
    t.shot("deals").await;
    // With the script, a card dropped on another column is moved by the same form. WebDriver
    // cannot drive native HTML5 drag and drop in Chromium, so the drag events are dispatched.
    t.go("/console/deals").await;
    let dragged = t
        .c
        .execute(
            r#"var card = document.querySelector(".board article.deal[draggable=true]");
            if (!card) return null;
            var home = card.closest("section.column");
            var target = Array.prototype.find.call(
                document.querySelectorAll(".board section.column[data-stage]"),
                function (c) { return c !== home; });
            var dt = new DataTransfer();
            function fire(el, type) {
                el.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
            }
            fire(card, "dragstart"); fire(target, "dragover"); fire(target, "drop");
            return card.querySelector("h3").textContent;"#,
            vec![],
        )
        .await
        .expect("drag a card");
    let title = dragged.as_str().expect("a draggable deal card").to_string();
    t.expect(&format!("{title} moved.")).await;

    // A user cannot open admin pages by URL.
    t.go("/console/users").await;
    t.expect("Not allowed").await;
    t.go("/console/tenants").await;
    t.expect("Not allowed").await;
    t.shot("forbidden").await;

    // The phone layout.
    t.c.set_window_size(390, 844).await.expect("resize");
    t.go("/console/customers").await;
    t.shot("customers-phone").await;
    t.c.set_window_size(1280, 900).await.expect("resize");

    // Logout ends the session: the pages lead back to the login.
    t.go("/console/account").await;
    t.shot("account").await;
    t.logout().await;
    t.go("/console/customers").await;
    t.expect("<h1>Log in</h1>").await;
    assert_eq!(t.path().await, "/console/login");

    t.c.clone().close().await.expect("close");
    let _ = running.stop.send(true);
}

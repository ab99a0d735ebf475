//! Multi-user mode: logging in with a local account through PAM. The test runs as root (as CI
//! does): it creates its own accounts and PAM service file, and removes them afterwards.

use std::time::{Duration, Instant};

use quire_tests::accounts::{is_root, login, PamService, TestAccount};
use quire_tests::{notebook_with, TestServer};
use serde_json::Value;

#[test]
fn local_accounts_log_in_through_pam() {
    if !is_root() {
        eprintln!("SKIPPED: PAM logins with test accounts need root (CI runs as root)");
        return;
    }
    let tag = std::process::id() % 100000;
    let name = |s: &str| format!("qp{tag}{s}");
    let service = PamService::create(&format!("quire-test-{tag}"));
    let good = TestAccount::create(&name("g"), Some("right horse"));
    let other = TestAccount::create(&name("o"), Some("battery staple"));
    let locked = TestAccount::create(&name("l"), Some("locked pw"));
    locked.lock();
    let expired = TestAccount::create(&name("e"), Some("expired pw"));
    expired.expire();
    let system = TestAccount::create_system(&name("s"), "system pw");
    let (good, other, locked, expired, system) = (
        &good.name,
        &other.name,
        &locked.name,
        &expired.name,
        &system.name,
    );

    let config = format!("multi_user = true\npam_service = \"{}\"\n", service.name);
    let server = TestServer::start_with_config(&[("nb.ipynb", &notebook_with(&["x"]))], &config);

    // The right password: a login cookie, and the server knows who this is.
    let (reply, browser) = login(&server, good, "right horse");
    assert_eq!(reply.status, 200, "{reply:?}");
    let cookie = browser.cookie("quire-user").expect("a login cookie");
    let me = browser.get("/api/me");
    assert_eq!(me.status, 200);
    let me: Value = me.json();
    assert_eq!(me["identity"]["username"], good.as_str());
    assert_eq!(me["identity"]["display_name"], "Test Person");

    // Wrong password and unknown account: the same answer.
    let (bad, _) = login(&server, good, "wrong");
    let (unknown, _) = login(&server, "qpnosuchuser", "wrong");
    assert_eq!((bad.status, unknown.status), (403, 403));
    assert_eq!(bad.json()["message"], unknown.json()["message"]);
    assert_eq!(bad.json()["message"], "invalid user name or password");
    // Account management runs, not only authentication.
    let (reply, _) = login(&server, locked, "locked pw");
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (403, Some("invalid user name or password"))
    );
    let (reply, _) = login(&server, expired, "expired pw");
    assert_eq!(
        (reply.status, reply.json()["message"].as_str()),
        (403, Some("this account has expired"))
    );
    // Root and system accounts never log in, even with the right password.
    assert_eq!(login(&server, system, "system pw").0.status, 403);
    assert_eq!(login(&server, "root", "anything").0.status, 403);

    // Repeated failures for one account back off with Retry-After; others are not slowed.
    let mut throttled = None;
    for _ in 0..6 {
        let (reply, _) = login(&server, good, "wrong again");
        if reply.status == 429 {
            throttled = Some(reply);
            break;
        }
    }
    let throttled = throttled.expect("failures are throttled");
    assert!(throttled.header("retry-after").is_some(), "{throttled:?}");
    let started = Instant::now();
    assert_eq!(
        login(&server, other, "battery staple").0.status,
        200,
        "another account logs in"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Logging out ends the session: the old cookie, sent again, no longer logs in.
    assert_eq!(browser.from_page("POST", "/api/logout", None).status, 204);
    let (status, _) = server.http_with("GET", "/api/me", None, &[("Cookie", &cookie)]);
    assert_eq!(status, 403);
}

#[test]
fn without_multi_user_mode_there_is_no_password_login() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let (reply, browser) = login(&server, "root", "x");
    assert_eq!(reply.status, 404);
    assert!(browser.cookie("quire-user").is_none());
}

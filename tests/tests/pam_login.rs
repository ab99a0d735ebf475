//! Multi-user mode: logging in with a local account through PAM. The test runs as root (as CI
//! does): it creates its own accounts and PAM service file, and removes them afterwards.

use std::time::{Duration, Instant};

use quire_tests::accounts::{is_root, login, message, PamService, TestAccount};
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
    let (status, response, cookie) = login(&server, good, "right horse");
    assert_eq!(status, 200, "{response}");
    let cookie = cookie.expect("a login cookie");
    let (status, me) = server.http_with("GET", "/api/me", None, &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["identity"]["username"], good.as_str());
    assert_eq!(me["identity"]["display_name"], "Test Person");

    // Wrong password and unknown account: the same answer.
    let (bad_status, bad, _) = login(&server, good, "wrong");
    let (unknown_status, unknown, _) = login(&server, "qpnosuchuser", "wrong");
    assert_eq!((bad_status, unknown_status), (403, 403));
    assert_eq!(message(&bad), message(&unknown));
    assert_eq!(message(&bad), "invalid user name or password");
    // Account management runs, not only authentication.
    let (status, response, _) = login(&server, locked, "locked pw");
    assert_eq!(
        (status, message(&response).as_str()),
        (403, "invalid user name or password")
    );
    let (status, response, _) = login(&server, expired, "expired pw");
    assert_eq!(
        (status, message(&response).as_str()),
        (403, "this account has expired")
    );
    // Root and system accounts never log in, even with the right password.
    let (status, _, _) = login(&server, system, "system pw");
    assert_eq!(status, 403);
    let (status, _, _) = login(&server, "root", "anything");
    assert_eq!(status, 403);

    // Repeated failures for one account back off with Retry-After; others are not slowed.
    let mut throttled = None;
    for _ in 0..6 {
        let (status, response, _) = login(&server, good, "wrong again");
        if status == 429 {
            throttled = Some(response);
            break;
        }
    }
    let throttled = throttled.expect("failures are throttled");
    assert!(
        throttled.to_ascii_lowercase().contains("retry-after:"),
        "{throttled}"
    );
    let started = Instant::now();
    let (status, _, _) = login(&server, other, "battery staple");
    assert_eq!(status, 200, "another account logs in");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Logging out ends the session.
    let origin = format!("http://127.0.0.1:{}", server.port);
    let (status, _) = server.http_with(
        "POST",
        "/api/logout",
        None,
        &[("Cookie", &cookie), ("Origin", &origin)],
    );
    assert_eq!(status, 204);
    let (status, _) = server.http_with("GET", "/api/me", None, &[("Cookie", &cookie)]);
    assert_eq!(status, 403);
}

#[test]
fn without_multi_user_mode_there_is_no_password_login() {
    let server = TestServer::start(&[("nb.ipynb", &notebook_with(&["x"]))]);
    let (status, _, cookie) = login(&server, "root", "x");
    assert_eq!(status, 404);
    assert!(cookie.is_none());
}

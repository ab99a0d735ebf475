//! Multi-user mode: logging in with a local account through PAM. The test runs as root (as CI
//! does): it creates its own accounts and PAM service file, and removes them afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

use quire_tests::{notebook_with, TestServer};
use serde_json::Value;

struct Cleanup(Vec<String>, std::path::PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("userdel").args(["-r", name]).output();
        }
        let _ = std::fs::remove_file(&self.1);
    }
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?} failed");
}

fn add_account(name: &str, password: &str, system: bool) {
    let _ = Command::new("userdel").args(["-r", name]).output();
    let mut args = vec!["-m", "-s", "/bin/sh", "-c", "Test Person,,,"];
    if system {
        args.push("-r");
    }
    args.push(name);
    run("useradd", &args);
    let mut chpasswd = Command::new("chpasswd")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(chpasswd.stdin.as_mut().unwrap(), "{name}:{password}").unwrap();
    assert!(chpasswd.wait().unwrap().success());
}

fn login(server: &TestServer, user: &str, password: &str) -> (u16, String, Option<String>) {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    let response = server.browser_post("/api/login", &body);
    let status = response[9..12].parse().unwrap();
    let cookie = response
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: quire-user=")
        })
        .map(|l| {
            l["set-cookie: ".len()..]
                .split(';')
                .next()
                .unwrap()
                .to_string()
        });
    (status, response, cookie)
}

fn message(response: &str) -> String {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(String::from))
        .unwrap_or_default()
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn local_accounts_log_in_through_pam() {
    if !is_root() {
        eprintln!("SKIPPED: PAM logins with test accounts need root (CI runs as root)");
        return;
    }
    let tag = std::process::id() % 100000;
    let [good, locked, expired, system, other] =
        ["g", "l", "e", "s", "o"].map(|s| format!("qp{tag}{s}"));
    let service = format!("quire-test-{tag}");
    let service_file = std::path::PathBuf::from("/etc/pam.d").join(&service);
    let _cleanup = Cleanup(
        vec![
            good.clone(),
            locked.clone(),
            expired.clone(),
            system.clone(),
            other.clone(),
        ],
        service_file.clone(),
    );
    std::fs::write(
        &service_file,
        "auth required pam_unix.so\naccount required pam_unix.so\n",
    )
    .unwrap();
    add_account(&good, "right horse", false);
    add_account(&other, "battery staple", false);
    add_account(&locked, "locked pw", false);
    run("usermod", &["-L", &locked]);
    add_account(&expired, "expired pw", false);
    run("chage", &["-E", "0", &expired]);
    add_account(&system, "system pw", true);

    let config = format!("multi_user = true\npam_service = \"{service}\"\n");
    let server = TestServer::start_with_config(&[("nb.ipynb", &notebook_with(&["x"]))], &config);

    // The right password: a login cookie, and the server knows who this is.
    let (status, response, cookie) = login(&server, &good, "right horse");
    assert_eq!(status, 200, "{response}");
    let cookie = cookie.expect("a login cookie");
    let (status, me) = server.http_with("GET", "/api/me", None, &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
    let me: Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["identity"]["username"], good.as_str());
    assert_eq!(me["identity"]["display_name"], "Test Person");

    // Wrong password and unknown account: the same answer.
    let (bad_status, bad, _) = login(&server, &good, "wrong");
    let (unknown_status, unknown, _) = login(&server, "qpnosuchuser", "wrong");
    assert_eq!((bad_status, unknown_status), (403, 403));
    assert_eq!(message(&bad), message(&unknown));
    assert_eq!(message(&bad), "invalid user name or password");
    // Account management runs, not only authentication.
    let (status, response, _) = login(&server, &locked, "locked pw");
    assert_eq!(
        (status, message(&response).as_str()),
        (403, "invalid user name or password")
    );
    let (status, response, _) = login(&server, &expired, "expired pw");
    assert_eq!(
        (status, message(&response).as_str()),
        (403, "this account has expired")
    );
    // Root and system accounts never log in, even with the right password.
    let (status, _, _) = login(&server, &system, "system pw");
    assert_eq!(status, 403);
    let (status, _, _) = login(&server, "root", "anything");
    assert_eq!(status, 403);

    // Repeated failures for one account back off with Retry-After; others are not slowed.
    let mut throttled = None;
    for _ in 0..6 {
        let (status, response, _) = login(&server, &good, "wrong again");
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
    let (status, _, _) = login(&server, &other, "battery staple");
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

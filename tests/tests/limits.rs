//! Limits that hold under attack (issue 12, server side): each test performs an attack from a
//! security review against the real binary on loopback and checks what a user would see.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use quire_tests::{TestServer, TOKEN};

/// Sends a raw HTTP/1.1 request and returns the whole response (headers included).
fn raw(server: &TestServer, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

/// A GET with extra header lines, the whole response.
fn get(server: &TestServer, path: &str, headers: &str) -> String {
    raw(
        server,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{headers}Connection: close\r\n\r\n",
            server.port
        ),
    )
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.split("\r\n\r\n").next()?.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// An `<img src="http://quire/api/contents?token=wrong">` on any page makes the visitor's own
/// browser send wrong tokens from the visitor's address. Wrong tokens must be throttled, but
/// the visitor's right token must keep working, by header, by `?token=` and by cookie.
#[test]
fn wrong_tokens_are_throttled_but_never_lock_out_the_right_one() {
    let server = TestServer::start(&[("nb.ipynb", &quire_tests::notebook_with(&["x"]))]);
    // A login cookie the visitor got before the attack.
    let cookie = TestServer::cookie_from(&server.open_login_link());

    let mut statuses = Vec::new();
    let mut throttled = None;
    for i in 0..60 {
        let response = get(&server, &format!("/api/contents?token=wrong-{i}"), "");
        statuses.push(status(&response));
        if status(&response) == 429 {
            throttled = Some(response);
            break;
        }
    }
    assert_eq!(statuses[0], 403, "{statuses:?}");
    let throttled =
        throttled.unwrap_or_else(|| panic!("wrong tokens are never throttled: {statuses:?}"));
    let retry_after: u64 = header(&throttled, "retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "{throttled}");
    assert!(
        throttled.contains("too many wrong tokens"),
        "the refusal says why: {throttled}"
    );

    // The right token still works, every way it can be given.
    let by_header = get(
        &server,
        "/api/contents",
        &format!("Authorization: token {TOKEN}\r\n"),
    );
    assert_eq!(status(&by_header), 200, "{by_header}");
    let by_query = get(&server, &format!("/api/contents?token={TOKEN}"), "");
    assert_eq!(status(&by_query), 200, "{by_query}");
    assert!(
        header(&by_query, "set-cookie").is_some(),
        "?token= still logs in: {by_query}"
    );
    let by_cookie = get(&server, "/api/contents", &format!("Cookie: {cookie}\r\n"));
    assert_eq!(status(&by_cookie), 200, "{by_cookie}");
    // A websocket with the token in its address (as the app opens rooms) still opens.
    let (file_id, session_id) = server.session("nb.ipynb");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut client =
            quire_tests::YClient::connect(&server.room_url(&file_id, &session_id)).await;
        client.sync().await;
        assert_eq!(client.notebook().cells[0].source, "x");
    });
    // The login form takes the right token too.
    let body = format!("token={TOKEN}&next=/");
    let form = raw(
        &server,
        &format!(
            "POST /login HTTP/1.1\r\nHost: 127.0.0.1:{0}\r\nOrigin: http://127.0.0.1:{0}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {1}\r\nConnection: close\r\n\r\n{body}",
            server.port,
            body.len()
        ),
    );
    assert_eq!(status(&form), 303, "{form}");

    // Wrong tokens are still held back, by header too.
    let wrong = get(&server, "/api/contents", "Authorization: token nope\r\n");
    assert_eq!(status(&wrong), 429, "{wrong}");

    // The count decays: once the wait asked for has passed, a wrong token is looked at again
    // (and refused as wrong, not as too many).
    std::thread::sleep(Duration::from_secs(retry_after));
    let later = get(&server, "/api/contents?token=wrong-again", "");
    assert_eq!(status(&later), 403, "{later}");
}

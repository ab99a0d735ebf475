//! Cookies: reading one from a request, and the `Set-Cookie` values of our login cookies.

use axum::http::{header, HeaderMap, HeaderValue};

/// The value of the cookie `name` in a request, if any.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, value) = pair.trim().split_once('=')?;
            (n == name).then(|| value.to_string())
        })
}

/// A login cookie: for this whole server, out of scripts' reach, not sent along with
/// cross-site subrequests, for `max_age_secs`. `None` if `value` cannot be a header.
pub fn session_cookie(name: &str, value: &str, max_age_secs: i64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}"
    ))
    .ok()
}

/// The `Set-Cookie` value that makes the browser forget a login cookie.
pub fn cleared_cookie(name: &str) -> Option<HeaderValue> {
    session_cookie(name, "", 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_name_and_set_for_the_whole_server() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; quire-session=v"),
        );
        assert_eq!(cookie(&headers, "quire-session"), Some("v".into()));
        assert_eq!(cookie(&headers, "quire-user"), None);
        assert_eq!(
            session_cookie("quire-guest", "abc", 2_592_000).unwrap(),
            "quire-guest=abc; Path=/; HttpOnly; SameSite=Lax; Max-Age=2592000"
        );
        assert_eq!(
            cleared_cookie("quire-user").unwrap(),
            "quire-user=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }
}

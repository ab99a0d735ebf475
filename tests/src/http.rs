//! The tests' HTTP client: a ureq agent with its own cookie store plays one browser. Statuses
//! come back as they are (a refusal is what many tests look for) and redirects are not
//! followed (the tests read where they point).

use std::time::Duration;

use serde_json::Value;
use ureq::http::HeaderMap;

/// A server's answer.
#[derive(Debug)]
pub struct Reply {
    /// 0 when no answer came; the body then says why.
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// A header's value (the first, when there are several).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One browser on a server at `http://127.0.0.1:{port}`: its cookies stay with it.
#[derive(Clone)]
pub struct Browser {
    agent: ureq::Agent,
    origin: String,
}

impl Browser {
    pub fn new(port: u16) -> Browser {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            // An answer may take a while (a run, a kernel restart).
            .timeout_global(Some(Duration::from_secs(120)))
            // A kept-alive connection is reused only well within the server's idle timeout
            // (15 s by default; ureq's own default is the same 15 s, and reusing one the server
            // was closing failed a request now and then: "Peer disconnected").
            .max_idle_age(Duration::from_secs(5))
            .build();
        Browser {
            agent: ureq::Agent::new_with_config(config),
            origin: format!("http://127.0.0.1:{port}"),
        }
    }

    /// `http://127.0.0.1:{port}`, as the app's pages send it in `Origin`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A request with extra headers; a body is sent as JSON unless a header says otherwise.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.origin));
        let typed = headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
        if body.is_some() && !typed {
            request = request.header("Content-Type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let answer = match body {
            Some(body) => self.agent.run(request.body(body).expect("a valid request")),
            None => self.agent.run(request.body(()).expect("a valid request")),
        };
        match answer {
            Ok(mut response) => {
                let body = response
                    .body_mut()
                    .with_config()
                    .limit(u64::MAX)
                    .read_to_vec()
                    .unwrap_or_default();
                Reply {
                    status: response.status().as_u16(),
                    headers: response.headers().clone(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                }
            }
            Err(e) => Reply {
                status: 0,
                headers: HeaderMap::new(),
                body: format!("no response: {e}"),
            },
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, &[])
    }

    /// A JSON request from one of the app's pages (same origin, no token: the cookies speak).
    pub fn from_page(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let origin = self.origin.clone();
        self.request(method, path, body, &[("Origin", &origin)])
    }

    /// Every cookie this browser holds, as its `Cookie` header (a websocket sends them all).
    pub fn cookies(&self) -> String {
        let jar = self.agent.cookie_jar_lock();
        let pairs: Vec<String> = jar
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect();
        pairs.join("; ")
    }

    /// The `name=value` of cookie `name` this browser holds.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.agent
            .cookie_jar_lock()
            .iter()
            .find(|c| c.name() == name)
            .map(|c| format!("{}={}", c.name(), c.value()))
    }
}

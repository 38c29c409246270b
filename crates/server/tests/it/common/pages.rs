//! A page client for the tests of the pages (`web`, `access`): it keeps
//! cookies, never follows redirects, reads the CSRF token of a form, and may
//! speak from a given address through the trusted proxy's `X-Forwarded-For`.

use super::TestApp;
use recarga_store::NewOperator;
use reqwest::StatusCode;
use std::collections::HashMap;
use std::time::Duration;

pub const PASSWORD: &str = "a long and careful password";

/// A client that keeps cookies, does not follow redirects, and may speak
/// from a given address (through the trusted proxy's `X-Forwarded-For`).
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub cookies: HashMap<String, String>,
    pub from: Option<String>,
}

pub struct Page {
    pub status: StatusCode,
    pub location: String,
    /// Every `Set-Cookie` of the answer.
    pub set_cookies: Vec<String>,
    pub text: String,
}

impl Page {
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.text.find(marker).map(|i| i + marker.len()).expect("a csrf input");
        let end = self.text[start..].find('"').expect("end of value") + start;
        self.text[start..end].to_string()
    }
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Browser {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            cookies: HashMap::new(),
            from: None,
        }
    }

    pub fn from(base: &str, ip: &str) -> Self {
        Browser {
            from: Some(ip.to_string()),
            ..Browser::new(base)
        }
    }

    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", self.cookie_header());
        if let Some(ip) = &self.from {
            req = req.header("x-forwarded-for", ip);
        }
        req
    }

    pub async fn take(&mut self, res: reqwest::Response) -> Page {
        let status = res.status();
        let location = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let set_cookies: Vec<String> = res
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || c.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        let text = res.text().await.unwrap_or_default();
        Page {
            status,
            location,
            set_cookies,
            text,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let res = self.request(reqwest::Method::GET, path).send().await.expect("GET");
        self.take(res).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let res = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_encode(form))
            .send()
            .await
            .expect("POST");
        self.take(res).await
    }

    pub async fn login_next(&mut self, email: &str, password: &str, next: &str) -> Page {
        let form = self.get("/admin/login").await;
        let csrf = form.csrf();
        self.post(
            "/admin/login",
            &[
                ("csrf", &csrf),
                ("email", email),
                ("password", password),
                ("next", next),
            ],
        )
        .await
    }

    pub async fn login(&mut self, email: &str, password: &str) -> Page {
        self.login_next(email, password, "/admin").await
    }

    pub async fn dashboard_login(&mut self, customer: &str, key: &str) -> Page {
        let form = self.get("/dashboard/login").await;
        let csrf = form.csrf();
        self.post(
            "/dashboard/login",
            &[("csrf", &csrf), ("customer_id", customer), ("api_key", key)],
        )
        .await
    }
}

/// `application/x-www-form-urlencoded`, as a browser sends a form (space as `+`).
pub fn form_encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub async fn operator(t: &TestApp, email: &str, role: &str) {
    t.store()
        .create_operator(
            &NewOperator {
                email: email.into(),
                password_hash: recarga_service::operators::hash_password(PASSWORD).expect("hash"),
                role: role.into(),
            },
            "test",
        )
        .await
        .expect("create operator");
}

//! The pages at the HTTP level, on every engine: operator login, CSRF on every
//! state-changing form (a missing or wrong token is a 403 that changes
//! nothing), session expiry and logout, login lockout stored in the database,
//! the viewer role, bad form input (4xx, no money moved), customer isolation
//! on the dashboard, the CSV export (exact filter, RFC 4180, streamed over
//! more than one page, keyset pages on screen), the live streams, and
//! `recarga admin create`.
//!
//! A tiny cookie jar stands in for the browser; redirects are not followed
//! so every 303 is checked. The browser suite (`browser.rs`) drives the same
//! pages in Chromium.

use crate::common::pages::{Browser, PASSWORD, operator};
use crate::common::{Opts, TestApp, body, engines};
use recarga_domain::{Currency, Money, TopupStatus};
use recarga_server::web::auth;
use recarga_store::{NewTopup, WebSession};
use reqwest::StatusCode;
use std::collections::BTreeSet;
use std::time::Duration;

const FINAL_WITHIN: Duration = Duration::from_secs(20);

async fn logged_in(t: &TestApp, email: &str, role: &str) -> Browser {
    operator(t, email, role).await;
    let mut b = Browser::new(&t.base);
    let res = b.login(email, PASSWORD).await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{:?}: login: {}", t.setup, res.text);
    assert_eq!(res.location, "/admin");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_csrf_and_logout() {
    for setup in engines() {
        let t = TestApp::spawn(setup).await;
        t.customer("CSRF_1", "100").await;
        operator(&t, "ops@example.com", "admin").await;
        let mut b = Browser::new(&t.base);

        // Anonymous: every page sends to the login form, with where to come back.
        let res = b.get("/admin/customers/CSRF_1").await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        assert_eq!(res.location, "/admin/login?next=%2Fadmin%2Fcustomers%2FCSRF_1");
        assert_eq!(b.get("/queue").await.status, StatusCode::SEE_OTHER);
        assert_eq!(b.get("/admin/transactions.csv").await.status, StatusCode::SEE_OTHER);

        // The login form itself needs its token.
        let form = b.get("/admin/login").await;
        assert!(form.text.contains("id=\"login-form\""));
        let res = b
            .post(
                "/admin/login",
                &[("csrf", "forged"), ("email", "ops@example.com"), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{setup:?}");
        assert!(!b.cookies.contains_key(auth::ADMIN_COOKIE));

        let res = b.login("OPS@example.com", PASSWORD).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        let cookie = res
            .set_cookies
            .iter()
            .find(|c| c.starts_with("recarga_admin="))
            .expect("a session cookie");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
            assert!(cookie.contains(attr), "{cookie} lacks {attr}");
        }
        let page = b.get("/admin/customers/CSRF_1").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            !page.text.contains(t.app.admin_key.as_str()),
            "the admin key is in the page"
        );
        let csrf = page.csrf();

        // A change without the token, or with another one, is refused and changes nothing.
        for token in [None, Some("0".repeat(64)), Some(format!("{csrf}x"))] {
            let mut form = vec![("amount", "500"), ("direction", "credit"), ("reason", "no token")];
            if let Some(tok) = &token {
                form.push(("csrf", tok));
            }
            let res = b.post("/admin/customers/CSRF_1/adjust", &form).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{setup:?} token {token:?}");
            assert!(res.text.contains("id=\"forbidden\""));
        }
        for (path, form) in [
            ("/admin/customers/CSRF_1/keys", vec![]),
            ("/admin/customers", vec![("id", "NEW_1"), ("name", "New")]),
            (
                "/admin/customers/CSRF_1/limits",
                vec![("reason", "x"), ("credit_limit", "900")],
            ),
        ] {
            let res = b.post(path, &form).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{setup:?} {path}");
        }
        assert_eq!(t.balance("CSRF_1").await, Money::major(100));
        assert!(t.store().get_customer("NEW_1").await.expect("read").is_none());
        assert!(t.store().list_api_keys("CSRF_1").await.expect("keys").len() == 1);
        let c = t.store().get_customer("CSRF_1").await.expect("read").expect("exists");
        assert_eq!(c.credit_limit, Money::ZERO);

        // Bad input: 4xx with a message, no money moved.
        for (form, why) in [
            (
                vec![("amount", "abc"), ("direction", "credit"), ("reason", "r")],
                "not an amount",
            ),
            (
                vec![("amount", "-5"), ("direction", "credit"), ("reason", "r")],
                "negative",
            ),
            (
                vec![("amount", "0"), ("direction", "credit"), ("reason", "r")],
                "positive",
            ),
            (
                vec![("amount", "1.234"), ("direction", "credit"), ("reason", "r")],
                "not an amount",
            ),
            (
                vec![("amount", "10"), ("direction", "sideways"), ("reason", "r")],
                "credit or debit",
            ),
            (
                vec![("amount", "10"), ("direction", "credit"), ("reason", "  ")],
                "reason",
            ),
            (
                vec![("amount", "5000"), ("direction", "debit"), ("reason", "too much")],
                "does not cover",
            ),
        ] {
            let mut form = form.clone();
            form.push(("csrf", &csrf));
            let res = b.post("/admin/customers/CSRF_1/adjust", &form).await;
            assert!(res.status.is_client_error(), "{setup:?} {form:?}: {}", res.status);
            assert!(res.text.contains(why), "{setup:?} {form:?}: no {why:?} in {}", res.text);
        }
        assert_eq!(t.balance("CSRF_1").await, Money::major(100));

        // With the token: one credit, audited with the operator's email.
        let res = b
            .post(
                "/admin/customers/CSRF_1/adjust",
                &[
                    ("csrf", &csrf),
                    ("amount", "1,000.50"),
                    ("direction", "credit"),
                    ("reason", "wire 42"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        assert_eq!(t.balance("CSRF_1").await, Money(110_050));
        let page = b.get("/admin/customers/CSRF_1").await;
        assert!(page.text.contains("1,100.50 MXN"), "balance shown");
        assert!(page.text.contains("wire 42"));
        let audit = t.store().audit_entries(Some("CSRF_1"), None, 10).await.expect("audit");
        assert!(
            audit
                .iter()
                .any(|a| a.action == "balance.adjust" && a.actor == "ops@example.com"),
            "{audit:?}"
        );

        // Logout needs the token too, then the old cookie opens nothing.
        let old = b.cookies.clone();
        let res = b.post("/admin/logout", &[("csrf", "wrong")]).await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        let res = b.post("/admin/logout", &[("csrf", &csrf)]).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        assert!(!b.cookies.contains_key(auth::ADMIN_COOKIE), "logout clears the cookie");
        b.cookies = old;
        let res = b.get("/admin").await;
        assert_eq!(
            res.status,
            StatusCode::SEE_OTHER,
            "{setup:?}: a logged-out session still works"
        );
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_and_cookies_must_be_signed() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                workers: false,
                ..Opts::default()
            },
        )
        .await;
        // Every request re-reads the operator's account: the session needs one.
        operator(&t, "short@example.com", "admin").await;
        let now = recarga_store::now_ms();
        let token = auth::random_hex(32);
        t.store()
            .create_session(&WebSession {
                id: auth::session_id(&token),
                kind: "operator".into(),
                subject: "short@example.com".into(),
                role: "admin".into(),
                key_prefix: None,
                csrf: auth::random_hex(32),
                created_at: now,
                expires_at: now + 1_500,
            })
            .await
            .expect("session");
        let signed = auth::sign_cookie(&t.app, auth::ADMIN_COOKIE, &token);
        let mut b = Browser::new(&t.base);
        b.cookies.insert(auth::ADMIN_COOKIE.into(), signed.clone());
        assert_eq!(b.get("/admin").await.status, StatusCode::OK, "{setup:?}");

        // The same token with a forged signature, or unsigned, opens nothing.
        for forged in [format!("{token}.{}", "0".repeat(64)), token.clone()] {
            b.cookies.insert(auth::ADMIN_COOKIE.into(), forged);
            assert_eq!(b.get("/admin").await.status, StatusCode::SEE_OTHER);
        }

        // Past its expiry the session is refused, and the live stream too.
        b.cookies.insert(auth::ADMIN_COOKIE.into(), signed);
        tokio::time::sleep(Duration::from_millis(1_700)).await;
        let res = b.get("/admin").await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: an expired session works");
        assert!(res.location.starts_with("/admin/login"));
        assert_eq!(b.get("/queue/events").await.status, StatusCode::UNAUTHORIZED);
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_lock_the_name_in_the_database() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                workers: false,
                ..Opts::default()
            },
        )
        .await;
        operator(&t, "lock@example.com", "admin").await;
        let mut b = Browser::new(&t.base);
        for attempt in 1..=4 {
            let res = b.login("lock@example.com", "wrong password").await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{setup:?} attempt {attempt}");
            assert!(res.text.contains("id=\"login-error\""));
        }
        let res = b.login("lock@example.com", "wrong password").await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        assert!(res.text.contains("locked"));
        // The right password is refused while locked; no session is issued.
        let res = b.login("lock@example.com", PASSWORD).await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        assert!(res.set_cookies.iter().all(|c| !c.starts_with("recarga_admin=")));
        // The lock lives in the database (every replica sees it): 30 s first.
        let state = t
            .store()
            .login_throttle("operator:127.0.0.1:lock@example.com")
            .await
            .expect("throttle");
        assert_eq!(state.failures, 5);
        let wait = state.locked_until.expect("locked") - recarga_store::now_ms();
        assert!((20_000..=30_000).contains(&wait), "{wait} ms");
        // A sixth failure doubles it.
        let again = t
            .store()
            .record_login_failure(
                "operator:127.0.0.1:lock@example.com",
                recarga_store::now_ms(),
                &auth::LOCKOUT,
            )
            .await
            .expect("failure");
        let wait = again.locked_until.expect("locked") - recarga_store::now_ms();
        assert!((50_000..=60_000).contains(&wait), "{wait} ms");
        // Other names are not affected; break-glass works with ADMIN_KEY.
        let res = b.login("admin", t.app.admin_key.as_str()).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        let audit = t.store().audit_entries(None, None, 50).await.expect("audit");
        assert!(audit.iter().any(|a| a.action == "login.locked"));
        assert!(audit.iter().any(|a| a.action == "login" && a.actor == "break-glass"));

        // The dashboard login is throttled the same way.
        let (_, key) = t.customer("LOCK_C", "10").await;
        let mut c = Browser::new(&t.base);
        for _ in 0..5 {
            let last = if key.ends_with('0') { '1' } else { '0' };
            let wrong = format!("{}{last}", &key[..key.len() - 1]);
            c.dashboard_login("LOCK_C", &wrong).await;
        }
        let res = c.dashboard_login("LOCK_C", &key).await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_see_but_cannot_change() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                workers: false,
                ..Opts::default()
            },
        )
        .await;
        t.customer("VIEW_1", "250").await;
        let mut b = logged_in(&t, "viewer@example.com", "viewer").await;
        let page = b.get("/admin/customers/VIEW_1").await;
        assert_eq!(page.status, StatusCode::OK);
        for form in ["adjust-form", "issue-key-form", "limits-form", "revoke-key-form"] {
            assert!(!page.text.contains(form), "{setup:?}: a viewer sees {form}");
        }
        let csrf = page.csrf();
        let key_id = t.store().list_api_keys("VIEW_1").await.expect("keys")[0].id.clone();
        for (path, form) in [
            (
                "/admin/customers/VIEW_1/adjust".to_string(),
                vec![("amount", "10"), ("direction", "credit"), ("reason", "r")],
            ),
            ("/admin/customers/VIEW_1/keys".to_string(), vec![]),
            (format!("/admin/customers/VIEW_1/keys/{key_id}/revoke"), vec![]),
            (
                "/admin/customers/VIEW_1/limits".to_string(),
                vec![("reason", "r"), ("credit_limit", "5")],
            ),
            ("/admin/customers".to_string(), vec![("id", "V2"), ("name", "V2")]),
            (
                "/admin/transactions/RLRnope/resolve".to_string(),
                vec![("outcome", "failed"), ("reason", "r")],
            ),
        ] {
            let mut form = form.clone();
            form.push(("csrf", &csrf));
            let res = b.post(&path, &form).await;
            assert_eq!(res.status, StatusCode::FORBIDDEN, "{setup:?} {path}");
            assert!(res.text.contains("id=\"forbidden\""));
        }
        assert_eq!(b.get("/admin/customers/new").await.status, StatusCode::FORBIDDEN);
        assert_eq!(t.balance("VIEW_1").await, Money::major(250));
        assert!(
            t.store().list_api_keys("VIEW_1").await.expect("keys")[0]
                .revoked_at
                .is_none()
        );
        assert!(t.store().get_customer("V2").await.expect("read").is_none());
        // Reading is allowed everywhere.
        for path in [
            "/admin",
            "/admin/customers",
            "/admin/transactions",
            "/admin/audit",
            "/queue",
        ] {
            assert_eq!(b.get(path).await.status, StatusCode::OK, "{setup:?} {path}");
        }
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pages_create_issue_limit_and_resolve() {
    for setup in engines() {
        let opts = Opts {
            unknown_deadline_s: 0,
            ..Opts::default()
        };
        let t = TestApp::spawn_with(setup, opts).await;
        let mut b = logged_in(&t, "lead@example.com", "admin").await;
        let csrf = b.get("/admin/customers/new").await.csrf();

        // Create: bad ids are refused, a good one lands on its page.
        for (id, name) in [("bad id!", "x"), ("", "x"), ("OK_1", " ")] {
            let res = b
                .post(
                    "/admin/customers",
                    &[("csrf", &csrf), ("id", id), ("name", name), ("credit_limit", "0")],
                )
                .await;
            assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{setup:?} {id:?}");
        }
        let res = b
            .post(
                "/admin/customers",
                &[
                    ("csrf", &csrf),
                    ("id", "SHOP_1"),
                    ("name", "Shop <&> \"One\""),
                    ("credit_limit", "50"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        assert_eq!(res.location, "/admin/customers/SHOP_1");
        let res = b
            .post(
                "/admin/customers",
                &[("csrf", &csrf), ("id", "SHOP_1"), ("name", "Again")],
            )
            .await;
        assert_eq!(res.status, StatusCode::CONFLICT);
        let page = b.get("/admin/customers/SHOP_1").await;
        assert!(page.text.contains("Shop &#60;&#38;&#62; &#34;One&#34;") || page.text.contains("Shop &lt;&amp;&gt;"));
        assert!(!page.text.contains("Shop <&>"), "names are escaped");

        // Issue a key: shown once, works on the API, never again on the page.
        let res = b
            .post("/admin/customers/SHOP_1/keys", &[("csrf", &csrf), ("label", "pos")])
            .await;
        assert_eq!(res.status, StatusCode::OK);
        let start = res.text.find("rk_").expect("key shown");
        let key: String = res.text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert_eq!(key.len(), 3 + 12 + 1 + 40, "{key}");
        assert!(!b.get("/admin/customers/SHOP_1").await.text.contains(&key));
        let res = b
            .post(
                "/admin/customers/SHOP_1/adjust",
                &[
                    ("csrf", &csrf),
                    ("amount", "1000"),
                    ("direction", "credit"),
                    ("reason", "first wire"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        let (status, _) = t.get(&key, "/v1/balance").await;
        assert_eq!(status, StatusCode::OK);

        // Limits: a reason is required; then the change is applied and audited.
        let res = b
            .post(
                "/admin/customers/SHOP_1/limits",
                &[("csrf", &csrf), ("daily_limit", "300"), ("reason", "")],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        let res = b
            .post(
                "/admin/customers/SHOP_1/limits",
                &[
                    ("csrf", &csrf),
                    ("daily_limit", "300"),
                    ("rate_limit", "7"),
                    ("discount", "1.50"),
                    ("products", "xoom_only"),
                    ("reason", "risk review"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        let c = t.store().get_customer("SHOP_1").await.expect("read").expect("exists");
        assert_eq!(c.daily_limit, Some(30_000));
        assert_eq!(c.rate_limit_per_s, Some(7));
        assert_eq!(c.discount_bps, 150);
        assert_eq!(c.catalogue.as_str(), "xoom_only");
        let audit = b.get("/admin/audit?subject=SHOP_1").await.text;
        for needle in [
            "customer.create",
            "key.create",
            "balance.adjust",
            "customer.update",
            "risk review",
            "lead@example.com",
        ] {
            assert!(audit.contains(needle), "{setup:?}: audit lacks {needle}");
        }

        // Revoke: the key stops working.
        let key_id = t.store().list_api_keys("SHOP_1").await.expect("keys")[0].id.clone();
        let res = b
            .post(
                &format!("/admin/customers/SHOP_1/keys/{key_id}/revoke"),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        assert_eq!(t.get(&key, "/v1/balance").await.0, StatusCode::UNAUTHORIZED);

        // An UNKNOWN top-up (no answer; checks disabled) resolved from its page.
        let (_, key2) = t.customer("UNK_1", "100").await;
        let (status, json) = t.topup(&key2, body("5512345994", "10", "unk-1"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        let id = json["id"].as_str().expect("id").to_string();
        t.wait_status(&id, TopupStatus::Unknown, FINAL_WITHIN).await;
        let page = b.get(&format!("/admin/transactions/{id}")).await;
        assert!(page.text.contains("id=\"resolve-form\""));
        assert!(page.text.contains("id=\"exchanges\""));
        // No outcome is preselected: an operator must choose what moves money.
        assert!(page.text.contains("<option value=\"\" selected disabled>"), "{setup:?}");
        let res = b
            .post(
                &format!("/admin/transactions/{id}/resolve"),
                &[("csrf", &csrf), ("outcome", ""), ("reason", "no choice")],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY, "{setup:?}");
        let res = b
            .post(
                &format!("/admin/transactions/{id}/resolve"),
                &[("csrf", &csrf), ("outcome", "failed"), ("reason", "")],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        let res = b
            .post(
                &format!("/admin/transactions/{id}/resolve"),
                &[
                    ("csrf", &csrf),
                    ("outcome", "failed"),
                    ("reason", "absent from statement"),
                ],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        assert_eq!(t.balance("UNK_1").await, Money::major(100));
        let page = b.get(&format!("/admin/transactions/{id}")).await;
        assert!(page.text.contains("release") && !page.text.contains("id=\"resolve-form\""));
        // A second resolution is a conflict, not a second release.
        let res = b
            .post(
                &format!("/admin/transactions/{id}/resolve"),
                &[("csrf", &csrf), ("outcome", "success"), ("reason", "again")],
            )
            .await;
        assert_eq!(res.status, StatusCode::CONFLICT);
        assert_eq!(t.balance("UNK_1").await, Money::major(100));
        assert_eq!(b.get("/admin/transactions/RLRnope").await.status, StatusCode::NOT_FOUND);
        assert_eq!(b.get("/admin/customers/NOPE").await.status, StatusCode::NOT_FOUND);
        t.assert_audit_clean().await;
        t.stop().await;
    }
}

fn new_topup(customer: &str, n: usize, reference: &str, created: i64) -> NewTopup {
    let _ = created;
    NewTopup {
        id: format!("RLR{}", uuid::Uuid::now_v7().simple()),
        customer_id: customer.into(),
        reference: reference.into(),
        ref_key: Some(reference.into()),
        idem_key: None,
        restart_failed: false,
        request_hash: format!("h{n}"),
        phone: recarga_domain::Msisdn::parse(&format!("55{:08}", 10_000_000 + n)).expect("phone"),
        face_value: Money::major(10),
        product_id: "XOOM_10_MXN".into(),
        amount_sent: Money::major(10),
        vat: Money::ZERO,
        delivered: Money::major(10),
        discount_bps: 0,
        currency: Currency::Mxn,
        fx_rate_micro: None,
        held: Money::major(10),
        sync_wait_until: None,
        request_id: None,
    }
}

fn parse_csv(text: &str) -> Vec<csv::StringRecord> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("a valid CSV record"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_is_exact_escaped_and_paged() {
    const ROWS: usize = 1_234;
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                workers: false,
                ..Opts::default()
            },
        )
        .await;
        t.customer("BIG_1", "100000").await;
        t.customer("OTHER_1", "100").await;
        let now = recarga_store::now_ms();
        for n in 0..ROWS {
            let reference = if n == 7 {
                "tricky, \"quoted\"\nline".to_string()
            } else {
                format!("ref-{n}")
            };
            t.store()
                .accept_topup(&new_topup("BIG_1", n, &reference, now))
                .await
                .expect("accept");
        }
        t.store()
            .accept_topup(&new_topup("OTHER_1", 99_999, "other", now))
            .await
            .expect("accept");
        let mut b = logged_in(&t, "fin@example.com", "viewer").await;

        // The whole history of one customer, streamed in pages: every row once.
        let res = b.get("/admin/transactions.csv?customer=BIG_1").await;
        assert_eq!(res.status, StatusCode::OK, "{setup:?}");
        let rows = parse_csv(&res.text);
        assert_eq!(
            rows[0].iter().collect::<Vec<_>>().join(","),
            "id,customer_id,reference,phone,status,face_value,held,amount_sent,currency,upstream_trans_id,upstream_ven_transid,failure_code,created_at,completed_at"
        );
        assert_eq!(rows.len(), ROWS + 1, "{setup:?}");
        let ids: BTreeSet<&str> = rows[1..].iter().map(|r| r.get(0).unwrap_or("")).collect();
        assert_eq!(ids.len(), ROWS);
        assert!(
            rows[1..]
                .iter()
                .all(|r| r.get(1) == Some("BIG_1") && r.get(5) == Some("10.00"))
        );
        assert!(
            rows[1..]
                .iter()
                .all(|r| chrono::DateTime::parse_from_rfc3339(r.get(12).unwrap_or("")).is_ok())
        );
        // RFC 4180: the comma, quotes and newline survive inside one field.
        assert!(res.text.contains("\"tricky, \"\"quoted\"\"\nline\""));
        assert!(rows.iter().any(|r| r.get(2) == Some("tricky, \"quoted\"\nline")));

        // Exactly the filter: one reference, one phone, a date range.
        let res = b.get("/admin/transactions.csv?customer=BIG_1&reference=ref-5").await;
        let rows = parse_csv(&res.text);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].get(2), Some("ref-5"));
        let res = b.get("/admin/transactions.csv?phone=%2B52%2055%201000%200009").await;
        assert_eq!(
            parse_csv(&res.text).len(),
            2,
            "{setup:?}: phone typed with +52 and spaces"
        );
        let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let res = b.get(&format!("/admin/transactions.csv?from={today}&to={today}")).await;
        assert_eq!(parse_csv(&res.text).len(), ROWS + 2);
        let res = b.get("/admin/transactions.csv?from=2000-01-01&to=2000-01-02").await;
        assert_eq!(parse_csv(&res.text).len(), 1, "header only");
        assert_eq!(
            b.get("/admin/transactions.csv?from=2026-02-30").await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            b.get("/admin/transactions?status=BOGUS").await.status,
            StatusCode::UNPROCESSABLE_ENTITY
        );

        // On screen: keyset pages of 50 over the whole history, no caps.
        let mut seen = BTreeSet::new();
        let mut path = "/admin/transactions?customer=BIG_1".to_string();
        let mut pages = 0;
        loop {
            let page = b.get(&path).await;
            assert_eq!(page.status, StatusCode::OK);
            pages += 1;
            for chunk in page.text.split("<tr data-id=\"").skip(1) {
                let id = chunk.split('"').next().unwrap_or("").to_string();
                assert!(seen.insert(id), "a row twice across pages");
            }
            let Some(at) = page.text.find("id=\"next-page\" href=\"") else {
                break;
            };
            let rest = &page.text[at + "id=\"next-page\" href=\"".len()..];
            path = rest
                .split('"')
                .next()
                .unwrap_or("")
                .replace("&amp;", "&")
                .replace("&#38;", "&");
            assert!(pages < 100, "pagination does not end");
        }
        assert_eq!(seen.len(), ROWS, "{setup:?}");
        assert_eq!(pages, ROWS.div_ceil(50));
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_see_only_their_own_data() {
    for setup in engines() {
        let t = TestApp::spawn(setup).await;
        let (_, key_a) = t.customer("ISO_A", "100").await;
        let (_, key_b) = t.customer("ISO_B", "100").await;
        let (_, a) = t.topup(&key_a, body("5512340031", "20", "a-1"), Some(10)).await;
        let (_, bb) = t.topup(&key_b, body("5512340099", "20", "b-secret"), Some(10)).await;
        let mine = a["id"].as_str().expect("id").to_string();
        let theirs = bb["id"].as_str().expect("id").to_string();
        t.wait_final(&mine, FINAL_WITHIN).await;
        t.wait_final(&theirs, FINAL_WITHIN).await;

        let mut c = Browser::new(&t.base);
        assert_eq!(c.get("/dashboard").await.status, StatusCode::SEE_OTHER);
        // Another customer's key does not open this customer's dashboard.
        let res = c.dashboard_login("ISO_A", &key_b).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{setup:?}");
        let res = c.dashboard_login("ISO_A", &key_a).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        assert!(
            c.cookies.values().all(|v| !v.contains(&key_a)),
            "the key is in a cookie"
        );
        let page = c.get("/dashboard").await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.text.contains(&mine) && !page.text.contains(&theirs));
        assert!(page.text.contains("80.00 MXN"), "balance after the top-up");
        assert!(!page.text.contains(&key_a));
        assert_eq!(c.get(&format!("/dashboard/topups/{mine}")).await.status, StatusCode::OK);
        let res = c.get(&format!("/dashboard/topups/{theirs}")).await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{setup:?}");
        assert!(!res.text.contains("b-secret"));
        // The search and the CSV are scoped by the session, whatever the query says.
        let page = c.get("/dashboard?reference=b-secret").await;
        assert!(!page.text.contains(&theirs));
        let csv = c.get("/dashboard/topups.csv?customer=ISO_B").await;
        assert_eq!(csv.status, StatusCode::OK);
        let rows = parse_csv(&csv.text);
        assert_eq!(rows.len(), 2, "{setup:?}: {}", csv.text);
        assert_eq!(rows[1].get(0), Some(mine.as_str()));
        // Operator pages are not reachable with a customer session.
        assert_eq!(c.get("/admin").await.status, StatusCode::SEE_OTHER);
        assert_eq!(c.get("/queue/events").await.status, StatusCode::UNAUTHORIZED);

        // Revoking the key the session was opened with ends the session.
        let prefix = recarga_service::keys::prefix_of(&key_a).expect("prefix").to_string();
        t.store().revoke_api_key(&prefix, "test").await.expect("revoke");
        assert_eq!(c.get("/dashboard").await.status, StatusCode::SEE_OTHER, "{setup:?}");
        assert_eq!(c.get("/dashboard/events").await.status, StatusCode::UNAUTHORIZED);
        t.stop().await;
    }
}

/// Reads server-sent events until `done` accepts one or `within` passes.
async fn read_events(res: reqwest::Response, within: Duration, done: impl Fn(&str) -> bool) -> Vec<String> {
    let mut res = res;
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, res.chunk()).await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer[..end]
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect::<Vec<_>>()
                .join("\n");
            buffer.drain(..end + 2);
            if !event.is_empty() {
                let stop = done(&event);
                events.push(event);
                if stop {
                    return events;
                }
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_push_queue_and_dashboard_changes() {
    for setup in engines() {
        let t = TestApp::spawn(setup).await;
        let (_, key) = t.customer("LIVE_1", "100").await;
        let b = logged_in(&t, "ops@example.com", "viewer").await;
        let mut c = Browser::new(&t.base);
        assert_eq!(c.dashboard_login("LIVE_1", &key).await.status, StatusCode::SEE_OTHER);

        let queue = b
            .http
            .get(format!("{}/queue/events", t.base))
            .header("cookie", b.cookie_header())
            .send()
            .await
            .expect("queue events");
        assert_eq!(queue.status(), StatusCode::OK);
        assert!(
            queue
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"))
        );
        let dash = c
            .http
            .get(format!("{}/dashboard/events", t.base))
            .header("cookie", c.cookie_header())
            .send()
            .await
            .expect("dashboard events");
        assert_eq!(dash.status(), StatusCode::OK);

        let (status, json) = t.topup(&key, body("5512340001", "20", "live-1"), None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let id = json["id"].as_str().expect("id").to_string();
        let seen = read_events(dash, FINAL_WITHIN, |e| e.contains(&id) && e.contains("status-success")).await;
        let last = seen.last().cloned().unwrap_or_default();
        assert!(
            last.contains("status-success") && last.contains("80.00 MXN"),
            "{setup:?}: {seen:?}"
        );
        let seen = read_events(queue, FINAL_WITHIN, |e| {
            serde_json::from_str::<serde_json::Value>(e)
                .ok()
                .and_then(|v| v["text"]["q-completed"].as_str().map(|s| s == "1"))
                .unwrap_or(false)
        })
        .await;
        let last: serde_json::Value = serde_json::from_str(seen.last().expect("an event")).expect("json");
        assert_eq!(last["text"]["q-completed"], "1", "{setup:?}: {seen:?}");
        assert!(
            last["html"]["chart-box"]
                .as_str()
                .unwrap_or("")
                .contains("throughput-chart")
        );
        assert!(last["text"]["latency-p50"].as_str().unwrap_or("").ends_with("ms"));
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_create_cli_makes_a_working_login() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                workers: false,
                ..Opts::default()
            },
        )
        .await;
        let run = |email: &str, role: &str, stdin: Option<&str>| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_recarga"));
            cmd.env_clear()
                .env("RECARGA_LOG", "warn")
                .env("DATABASE_URL", &t.db.url)
                .args(["admin", "create", "--email", email, "--role", role])
                .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("spawn recarga");
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                // A child that exits early closes the pipe; its status and stderr tell why.
                let _ = pipe.write_all(text.as_bytes());
            }
            child.wait_with_output().expect("wait")
        };
        let out = run("Piped@Example.com", "admin", Some(&format!("{PASSWORD}\n")));
        assert!(
            out.status.success(),
            "{setup:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(json["email"], "piped@example.com");
        assert!(json.get("password").is_none(), "a piped password is not echoed");
        let mut b = Browser::new(&t.base);
        assert_eq!(
            b.login("piped@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );

        let out = run("gen@example.com", "viewer", None);
        assert!(
            out.status.success(),
            "{setup:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let generated = json["password"].as_str().expect("a generated password").to_string();
        let mut v = Browser::new(&t.base);
        assert_eq!(
            v.login("gen@example.com", &generated).await.status,
            StatusCode::SEE_OTHER
        );
        let stored = t
            .store()
            .get_operator("gen@example.com")
            .await
            .expect("read")
            .expect("exists");
        assert!(stored.password_hash.starts_with("$argon2id$") && !stored.password_hash.contains(&generated));

        assert!(!run("short@example.com", "admin", Some("short\n")).status.success());
        assert!(
            !run("gen@example.com", "admin", Some(&format!("{PASSWORD}\n")))
                .status
                .success()
        );
        assert!(
            !run("x@example.com", "root", Some(&format!("{PASSWORD}\n")))
                .status
                .success()
        );
        t.stop().await;
    }
}

//! Who may get in, and how hard they may push (issue 18, findings 9–12 and
//! 14), on every engine: the login page's `next` stays on this site; failed
//! logins lock a (source address, name) pair, not the name; wrong
//! `x-admin-key`s are counted and answered 429; logins are throttled per
//! address and their argon2 work is bounded; old failure rows are purged;
//! operators are disabled, re-enabled, re-roled and given new passwords
//! (CLI and panel, audited) and every request and live stream re-checks
//! them; slow clients are cut off (headers, bodies), connections are
//! capped, live streams are capped per session and per customer.
//!
//! The security items are also checked against the real `recarga serve`
//! (`running_binary_*`): a flood of 300 logins with fresh e-mails, a
//! slowloris client, an off-site `next`.
//!
//! Source addresses are told apart with `X-Forwarded-For` from a trusted
//! proxy (`--trusted-proxies 127.0.0.1`), the way the gateway sees clients
//! behind a load balancer.

use crate::common::pages::{Browser, PASSWORD, form_encode, operator};
use crate::common::{Opts, TestApp, engines};
use reqwest::StatusCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gateway without workers that trusts loopback as its proxy.
async fn gateway(setup: crate::common::Setup, extra: Vec<(&'static str, String)>) -> TestApp {
    let mut all = vec![("--trusted-proxies", "127.0.0.1".to_string())];
    all.extend(extra);
    TestApp::spawn_with(
        setup,
        Opts {
            workers: false,
            extra: all,
            ..Opts::default()
        },
    )
    .await
}

// ------------------------------------------------------------ 12. open redirect

/// Targets a browser would take off-site (it strips tabs and newlines, and
/// reads `\` as `/`), or that are no page of ours.
const OFF_SITE: [&str; 7] = [
    "/\t/evil.example",
    "/\n/evil.example",
    "//evil.example",
    "/\\evil.example",
    "https://evil.example/admin",
    "/ /evil.example",
    "/nowhere",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_next_accepts_only_local_pages() {
    for setup in engines() {
        let t = gateway(setup, vec![]).await;
        operator(&t, "next@example.com", "admin").await;
        let mut b = Browser::new(&t.base);
        for bad in OFF_SITE {
            let res = b.login_next("next@example.com", PASSWORD, bad).await;
            assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?} {bad:?}: {}", res.text);
            assert_eq!(res.location, "/admin", "{setup:?}: next={bad:?}");
            // Logged in: the login page sends on at once, to the same place.
            let q = form_encode(&[("next", bad)]);
            let res = b.get(&format!("/admin/login?{q}")).await;
            assert_eq!(res.location, "/admin", "{setup:?}: GET next={bad:?}");
            b.cookies.clear();
        }
        // Pages of ours are kept, with their query.
        let res = b
            .login_next("next@example.com", PASSWORD, "/admin/customers?status=active")
            .await;
        assert_eq!(res.location, "/admin/customers?status=active");
        let res = b.get("/admin/login?next=%2Fqueue").await;
        assert_eq!(res.location, "/queue");
        t.stop().await;
    }
}

// ------------------------------------------------------------ 10. lockout and secret guessing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_an_address_and_name_not_the_name() {
    for setup in engines() {
        let t = gateway(setup, vec![]).await;
        operator(&t, "pair@example.com", "admin").await;
        let (_, key) = t.customer("PAIR_C", "10").await;
        let mut attacker = Browser::from(&t.base, "203.0.113.9");
        for attempt in 1..=4 {
            let res = attacker.login("admin", "not the admin key at all").await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{setup:?} attempt {attempt}");
            attacker.login("pair@example.com", "wrong password").await;
            attacker.dashboard_login("PAIR_C", "rk_wrong_wrong_wrong").await;
        }
        assert_eq!(
            attacker.login("admin", "not the admin key at all").await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            attacker.login("pair@example.com", "wrong password").await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            attacker.dashboard_login("PAIR_C", "rk_wrong_wrong_wrong").await.status,
            StatusCode::TOO_MANY_REQUESTS
        );
        // The attacker's address stays locked, even with the right secret…
        let res = attacker.login("admin", t.app.admin_key.as_str()).await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        // … but the names are not: their owners log in from elsewhere.
        let mut owner = Browser::from(&t.base, "198.51.100.7");
        let res = owner.login("admin", t.app.admin_key.as_str()).await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        let mut owner = Browser::from(&t.base, "198.51.100.7");
        assert_eq!(
            owner.login("pair@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let mut customer = Browser::from(&t.base, "198.51.100.8");
        assert_eq!(
            customer.dashboard_login("PAIR_C", &key).await.status,
            StatusCode::SEE_OTHER
        );
        t.stop().await;
    }
}

async fn queue_stats(t: &TestApp, from: &str, key: &str) -> reqwest::Response {
    t.http
        .get(format!("{}/api/queue/stats", t.base))
        .header("x-forwarded-for", from)
        .header("x-admin-key", key)
        .send()
        .await
        .expect("queue stats")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_admin_keys_are_counted_and_answered_429() {
    for setup in engines() {
        let t = gateway(setup, vec![]).await;
        let right = t.app.admin_key.to_string();
        for attempt in 1..=4 {
            let res = queue_stats(&t, "203.0.113.20", "a-wrong-operator-key").await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{setup:?} attempt {attempt}");
        }
        let res = queue_stats(&t, "203.0.113.20", "a-wrong-operator-key").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        assert!(res.headers().get("retry-after").is_some());
        let body: serde_json::Value = res.json().await.expect("json");
        assert_eq!(body["code"], "rate_limited", "{body}");
        // That address may not try again for a while, not even with the key.
        let res = queue_stats(&t, "203.0.113.20", &right).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        // Other addresses are not affected.
        let res = queue_stats(&t, "198.51.100.20", &right).await;
        assert_eq!(res.status(), StatusCode::OK, "{setup:?}");
        let audit = t.store().audit_entries(None, None, 50).await.expect("audit");
        assert!(audit.iter().any(|a| a.action == "login.locked"), "{audit:?}");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_binary_refuses_a_weak_admin_key_in_production() {
    use crate::common::procs::{recarga, run};
    let work = recarga_store::testing::temp_dir("weak-key");
    for (key, why) in [
        ("0123456789abcdef", "short"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "one character"),
        ("0123456789abcdef0123456789abcdef0123456789abcdef", "a repeated pattern"),
        ("passwordpasswordpasswordpassword1", "a repeated word"),
    ] {
        let mut cmd = recarga(&work);
        cmd.arg("serve")
            .env("RECARGA_DATA_DIR", work.join("data"))
            .env("RECARGA_ENV", "production")
            .env("ADMIN_KEY", key)
            .env("PORT", crate::common::procs::free_port().to_string())
            .env("RECARGA_BIND", "127.0.0.1")
            .env("RECARGA_UPSTREAM", "latcom")
            .env("LATCOM_BASE_URL", "http://127.0.0.1:9")
            .env("LATCOM_USERNAME", "u")
            .env("LATCOM_PASSWORD", "p")
            .env("LATCOM_DIST_API_KEY", "d")
            .env("LATCOM_USER_UID", "1");
        let out = run(cmd).await;
        assert!(!out.ok(), "a {why} ADMIN_KEY was accepted: {out:?}");
        assert!(out.stderr.contains("ADMIN_KEY"), "{why}: {out:?}");
    }
}

// ------------------------------------------------------------ 9. login exhaustion

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_per_source_address() {
    for setup in engines() {
        let t = gateway(setup, vec![("--login-per-ip-per-min", "5".into())]).await;
        let mut flood = Browser::from(&t.base, "203.0.113.30");
        for i in 0..5 {
            let res = flood.login(&format!("fresh{i}@example.com"), "whatever it is").await;
            assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{setup:?} login {i}");
        }
        let res = flood.login("fresh-again@example.com", "whatever it is").await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{setup:?}: {}", res.text);
        let res = flood.dashboard_login("ANY", "rk_whatever").await;
        assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        // Another address is not affected.
        let mut other = Browser::from(&t.base, "198.51.100.30");
        let res = other.login("fresh-other@example.com", "whatever it is").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{setup:?}");
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_login_failure_rows_are_purged() {
    for setup in engines() {
        let t = gateway(setup, vec![]).await;
        let long_ago = recarga_store::now_ms() - 2 * 3_600_000;
        t.store()
            .record_login_failure(
                "operator:192.0.2.1:old@example.com",
                long_ago,
                &recarga_server::web::auth::LOCKOUT,
            )
            .await
            .expect("old failure");
        let mut b = Browser::from(&t.base, "203.0.113.40");
        assert_eq!(
            b.login("new@example.com", "wrong password").await.status,
            StatusCode::UNAUTHORIZED
        );
        let old = t
            .store()
            .login_throttle("operator:192.0.2.1:old@example.com")
            .await
            .expect("throttle");
        assert_eq!(old.failures, 0, "{setup:?}: the hour-old row is still there");
        t.stop().await;
    }
}

// ------------------------------------------------------------ 11. operator lifecycle

async fn cli(t: &TestApp, args: &[&str]) -> recarga_testkit::CliRun {
    let work = recarga_store::testing::temp_dir("op-cli");
    let mut cmd = crate::common::procs::recarga(&work);
    cmd.env("DATABASE_URL", &t.db.url).args(args);
    crate::common::procs::run(cmd).await
}

async fn cli_ok(t: &TestApp, args: &[&str]) -> serde_json::Value {
    let out = cli(t, args).await;
    assert!(out.ok(), "recarga {args:?}: {out:?}");
    out.json
}

/// Reads a live stream until it ends (`true`) or `within` passes (`false`).
async fn stream_ends(mut res: reqwest::Response, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, res.chunk()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) | Ok(Err(_)) => return true,
            Err(_) => return false,
        }
    }
}

async fn open_stream(b: &Browser, path: &str) -> reqwest::Response {
    b.request(reqwest::Method::GET, path).send().await.expect("stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_lifecycle_from_the_command_line() {
    for setup in engines() {
        let t = gateway(setup, vec![]).await;
        operator(&t, "life@example.com", "admin").await;
        let mut b = Browser::new(&t.base);
        assert_eq!(
            b.login("life@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        assert_eq!(b.get("/admin").await.status, StatusCode::OK);
        let live = open_stream(&b, "/queue/events").await;
        assert_eq!(live.status(), StatusCode::OK);

        // Disabled: the open session and the open stream end, logins are refused.
        let out = cli_ok(
            &t,
            &["admin", "disable", "--email", "life@example.com", "--actor", "sec"],
        )
        .await;
        assert_eq!(out["active"], false, "{out}");
        assert!(
            stream_ends(live, Duration::from_secs(10)).await,
            "{setup:?}: stream survived"
        );
        let res = b.get("/admin").await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}");
        assert!(res.location.starts_with("/admin/login"));
        let mut b = Browser::new(&t.base);
        assert_eq!(
            b.login("life@example.com", PASSWORD).await.status,
            StatusCode::UNAUTHORIZED
        );

        // Enabled again, then made a viewer: an open session loses the right to change.
        cli_ok(&t, &["admin", "enable", "--email", "life@example.com"]).await;
        assert_eq!(
            b.login("life@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let out = cli_ok(
            &t,
            &["admin", "set-role", "--email", "life@example.com", "--role", "viewer"],
        )
        .await;
        assert_eq!(out["role"], "viewer");
        let page = b.get("/admin").await;
        let csrf = page.csrf();
        let res = b
            .post(
                "/admin/customers",
                &[("csrf", &csrf), ("id", "LIFE_1"), ("name", "Life"), ("currency", "MXN")],
            )
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN, "{setup:?}: {}", res.text);
        assert!(t.store().get_customer("LIFE_1").await.expect("read").is_none());

        // A new password ends the sessions opened with the old one.
        let out = cli_ok(&t, &["admin", "reset-password", "--email", "life@example.com"]).await;
        let fresh = out["password"].as_str().expect("a generated password").to_string();
        assert_eq!(b.get("/admin").await.status, StatusCode::SEE_OTHER);
        let mut b = Browser::new(&t.base);
        assert_eq!(
            b.login("life@example.com", PASSWORD).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(b.login("life@example.com", &fresh).await.status, StatusCode::SEE_OTHER);

        // Refusals: an unknown operator, a bad role.
        let out = cli(&t, &["admin", "disable", "--email", "nobody@example.com"]).await;
        assert!(!out.ok() && out.stderr.contains("no operator"), "{out:?}");
        let out = cli(
            &t,
            &["admin", "set-role", "--email", "life@example.com", "--role", "root"],
        )
        .await;
        assert!(!out.ok(), "{out:?}");

        let audit = t
            .store()
            .audit_entries(Some("life@example.com"), None, 50)
            .await
            .expect("audit");
        for action in [
            "operator.disable",
            "operator.enable",
            "operator.set_role",
            "operator.reset_password",
        ] {
            assert!(
                audit.iter().any(|a| a.action == action),
                "{setup:?}: no {action}: {audit:?}"
            );
        }
        assert!(audit.iter().any(|a| a.action == "operator.disable" && a.actor == "sec"));
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_lifecycle_in_the_panel() {
    for setup in engines() {
        let t = gateway(setup, vec![]).await;
        operator(&t, "boss@example.com", "admin").await;
        operator(&t, "peer@example.com", "admin").await;
        operator(&t, "look@example.com", "viewer").await;
        let mut boss = Browser::new(&t.base);
        assert_eq!(
            boss.login("boss@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let mut peer = Browser::new(&t.base);
        assert_eq!(
            peer.login("peer@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let mut look = Browser::new(&t.base);
        assert_eq!(
            look.login("look@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );

        let page = boss.get("/admin/operators").await;
        assert_eq!(page.status, StatusCode::OK, "{setup:?}: {}", page.text);
        assert!(page.text.contains("peer@example.com") && page.text.contains("look@example.com"));
        let csrf = page.csrf();

        // A viewer sees the page but cannot change anyone.
        let vpage = look.get("/admin/operators").await;
        assert_eq!(vpage.status, StatusCode::OK);
        let vcsrf = vpage.csrf();
        let res = look
            .post("/admin/operators/peer@example.com/disable", &[("csrf", &vcsrf)])
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        // Without the form's token nothing changes either.
        let res = boss
            .post("/admin/operators/peer@example.com/disable", &[("csrf", "x")])
            .await;
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        assert_eq!(peer.get("/admin").await.status, StatusCode::OK);

        let res = boss
            .post("/admin/operators/peer@example.com/disable", &[("csrf", &csrf)])
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER, "{setup:?}: {}", res.text);
        assert_eq!(peer.get("/admin").await.status, StatusCode::SEE_OTHER, "{setup:?}");
        let res = boss
            .post("/admin/operators/peer@example.com/enable", &[("csrf", &csrf)])
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        let res = boss
            .post(
                "/admin/operators/look@example.com/role",
                &[("csrf", &csrf), ("role", "admin")],
            )
            .await;
        assert_eq!(res.status, StatusCode::SEE_OTHER);
        let res = boss
            .post(
                "/admin/operators/look@example.com/role",
                &[("csrf", &csrf), ("role", "root")],
            )
            .await;
        assert_eq!(res.status, StatusCode::UNPROCESSABLE_ENTITY);
        let res = boss
            .post("/admin/operators/look@example.com/password", &[("csrf", &csrf)])
            .await;
        assert_eq!(res.status, StatusCode::OK, "{setup:?}: {}", res.text);
        assert!(res.text.contains("id=\"new-password\""), "{}", res.text);
        let op = t
            .store()
            .get_operator("look@example.com")
            .await
            .expect("read")
            .expect("op");
        assert_eq!(op.role, "admin");
        assert_eq!(
            look.get("/admin").await.status,
            StatusCode::SEE_OTHER,
            "password reset ends sessions"
        );

        let audit = t.store().audit_entries(None, None, 100).await.expect("audit");
        for action in [
            "operator.disable",
            "operator.enable",
            "operator.set_role",
            "operator.reset_password",
        ] {
            assert!(
                audit
                    .iter()
                    .any(|a| a.action == action && a.actor == "boss@example.com"),
                "{setup:?}: no {action} by boss: {audit:?}"
            );
        }
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_live_streams() {
    for setup in engines() {
        let t = gateway(setup, vec![]).await;
        operator(&t, "bye@example.com", "viewer").await;
        let mut b = Browser::new(&t.base);
        assert_eq!(b.login("bye@example.com", PASSWORD).await.status, StatusCode::SEE_OTHER);
        let live = open_stream(&b, "/queue/events").await;
        assert_eq!(live.status(), StatusCode::OK);
        let (_, key) = t.customer("BYE_C", "10").await;
        let mut c = Browser::new(&t.base);
        assert_eq!(c.dashboard_login("BYE_C", &key).await.status, StatusCode::SEE_OTHER);
        let dash = open_stream(&c, "/dashboard/events").await;
        assert_eq!(dash.status(), StatusCode::OK);

        let csrf = b.get("/admin").await.csrf();
        assert_eq!(
            b.post("/admin/logout", &[("csrf", &csrf)]).await.status,
            StatusCode::SEE_OTHER
        );
        let csrf = c.get("/dashboard").await.csrf();
        assert_eq!(
            c.post("/dashboard/logout", &[("csrf", &csrf)]).await.status,
            StatusCode::SEE_OTHER
        );
        assert!(
            stream_ends(live, Duration::from_secs(10)).await,
            "{setup:?}: queue stream"
        );
        assert!(
            stream_ends(dash, Duration::from_secs(10)).await,
            "{setup:?}: dashboard stream"
        );
        t.stop().await;
    }
}

// ------------------------------------------------------------ 14. slow clients and floods

/// Opens a raw connection and sends `bytes`; returns it.
async fn raw(base: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    s
}

/// Whether the server closes (or answers and closes) `s` within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0_u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    for setup in engines() {
        let t = gateway(
            setup,
            vec![
                ("--header-read-timeout-s", "1".into()),
                ("--body-timeout-s", "1".into()),
            ],
        )
        .await;
        // Slowloris: headers that never end.
        let mut slow = raw(&t.base, b"GET /health HTTP/1.1\r\nHost: x\r\nX-a: 1\r\n").await;
        assert!(
            closed_within(&mut slow, Duration::from_secs(5)).await,
            "{setup:?}: headers"
        );
        // An idle keep-alive connection is not kept forever either.
        let mut idle = raw(&t.base, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "{setup:?}: idle"
        );
        // A body that never arrives.
        let mut body = raw(
            &t.base,
            b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=a",
        )
        .await;
        assert!(
            closed_within(&mut body, Duration::from_secs(5)).await,
            "{setup:?}: body"
        );
        let res = t.http.get(format!("{}/health", t.base)).send().await.expect("health");
        assert_eq!(res.status(), StatusCode::OK);
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped() {
    for setup in engines() {
        let t = gateway(
            setup,
            vec![
                ("--max-connections", "2".into()),
                ("--header-read-timeout-s", "30".into()),
            ],
        )
        .await;
        let a = raw(&t.base, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
        let b = raw(&t.base, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let third = http.get(format!("{}/health", t.base)).send().await;
        assert!(third.is_err(), "{setup:?}: a third connection was served: {third:?}");
        drop(a);
        drop(b);
        let res = t.http.get(format!("{}/health", t.base)).send().await.expect("health");
        assert_eq!(res.status(), StatusCode::OK);
        t.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_are_capped_per_session_and_per_customer() {
    for setup in engines() {
        let t = gateway(
            setup,
            vec![
                ("--live-streams-per-session", "2".into()),
                ("--live-streams-per-customer", "3".into()),
            ],
        )
        .await;
        operator(&t, "many@example.com", "viewer").await;
        let mut b = Browser::new(&t.base);
        assert_eq!(
            b.login("many@example.com", PASSWORD).await.status,
            StatusCode::SEE_OTHER
        );
        let q1 = open_stream(&b, "/queue/events").await;
        let q2 = open_stream(&b, "/queue/events").await;
        assert_eq!((q1.status(), q2.status()), (StatusCode::OK, StatusCode::OK));
        let q3 = open_stream(&b, "/queue/events").await;
        assert_eq!(q3.status(), StatusCode::TOO_MANY_REQUESTS, "{setup:?}");
        drop(q1);
        // A closed stream gives its place back.
        let mut again = None;
        for _ in 0..50 {
            let res = open_stream(&b, "/queue/events").await;
            if res.status() == StatusCode::OK {
                again = Some(res);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            again.is_some(),
            "{setup:?}: the closed stream's place was not given back"
        );

        let (_, key) = t.customer("MANY_C", "10").await;
        let mut c1 = Browser::new(&t.base);
        assert_eq!(c1.dashboard_login("MANY_C", &key).await.status, StatusCode::SEE_OTHER);
        let mut c2 = Browser::new(&t.base);
        assert_eq!(c2.dashboard_login("MANY_C", &key).await.status, StatusCode::SEE_OTHER);
        let d1 = open_stream(&c1, "/dashboard/events").await;
        let d2 = open_stream(&c1, "/dashboard/events").await;
        let d3 = open_stream(&c2, "/dashboard/events").await;
        assert_eq!(
            (d1.status(), d2.status(), d3.status()),
            (StatusCode::OK, StatusCode::OK, StatusCode::OK)
        );
        let d4 = open_stream(&c2, "/dashboard/events").await;
        assert_eq!(d4.status(), StatusCode::TOO_MANY_REQUESTS, "{setup:?}: customer cap");
        t.stop().await;
    }
}

// ------------------------------------------------------------ the running binary

/// `recarga serve` with an ADMIN_KEY, on embedded SQLite, and an API customer.
async fn serve_binary(extra: &[(&str, &str)]) -> (crate::common::procs::Proc, String, String) {
    use crate::common::procs::{free_port, recarga, run, spawn, wait_ready};
    let work = recarga_store::testing::temp_dir("access-bin");
    let data = work.join("data");
    let mut create = recarga(&work);
    create.env("RECARGA_DATA_DIR", &data).args([
        "customer",
        "create",
        "--id",
        "FLOOD_API",
        "--name",
        "Flood",
        "--credit",
        "100",
    ]);
    let out = run(create).await;
    assert!(out.ok(), "{out:?}");
    let key = out.json["api_key"].as_str().expect("key").to_string();
    let port = free_port();
    let mut cmd = recarga(&work);
    cmd.arg("serve")
        .env("RECARGA_DATA_DIR", &data)
        .env("PORT", port.to_string())
        .env("RECARGA_BIND", "127.0.0.1")
        .env("RECARGA_DEMO", "false")
        .env("ADMIN_KEY", "flood-test-operator-key-0123456789")
        .env("RECARGA_SANDBOX_LATENCY_MS", "20-50");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut proc = spawn(cmd, &work, "access");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&mut proc, &format!("{base}/health"), Some(StatusCode::OK)).await;
    (proc, base, key)
}

/// Peak resident memory allowed during the login flood.
const FLOOD_RSS_MAX_KIB: u64 = 300 * 1024;
const FLOOD_LOGINS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_binary_survives_a_login_flood_and_slow_clients() {
    // No per-address limit: the argon2 bound alone must hold the memory.
    // The default header timeout (10 s): on a loaded 2-core machine 300
    // connections opened at once are not all read within the 2 s that the
    // slowloris check below uses on a gateway of its own.
    let (proc, base, key) = serve_binary(&[("RECARGA_LOGIN_PER_IP_PER_MIN", "0")]).await;
    // One login form token, reused by every request of the flood.
    let mut b = Browser::new(&base);
    let csrf = b.get("/admin/login").await.csrf();
    let cookie = b.cookie_header();
    let flood = futures::future::join_all((0..FLOOD_LOGINS).map(|i| {
        let (base, csrf, cookie) = (base.clone(), csrf.clone(), cookie.clone());
        async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client");
            let form = form_encode(&[
                ("csrf", &csrf),
                ("email", &format!("fresh{i}@flood.example")),
                ("password", "guess guess guess"),
                ("next", "/admin"),
            ]);
            http.post(format!("{base}/admin/login"))
                .header("cookie", cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .map(|r| r.status())
        }
    }));
    let api = async {
        // The API keeps answering while the flood runs.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let res = http
            .get(format!("{base}/v1/balance"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("the API answers during the flood");
        res.status()
    };
    let (answers, api_status) = tokio::join!(flood, api);
    assert_eq!(api_status, StatusCode::OK, "{}", proc.logs());
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Ok(s) if *s == StatusCode::UNAUTHORIZED || *s == StatusCode::SERVICE_UNAVAILABLE || *s == StatusCode::TOO_MANY_REQUESTS))
        .count();
    assert_eq!(refused, FLOOD_LOGINS, "{answers:?}");
    let peak = proc.peak_rss_kib().expect("VmHWM");
    assert!(
        peak < FLOOD_RSS_MAX_KIB,
        "peak RSS {} MiB during the flood",
        peak / 1024
    );

    // Slowloris: cut off within the header timeout (2 s), with some slack.
    let (slow_proc, slow_base, _) = serve_binary(&[("RECARGA_HEADER_READ_TIMEOUT_S", "2")]).await;
    let mut slow = raw(&slow_base, b"GET /health HTTP/1.1\r\nHost: x\r\n").await;
    let started = std::time::Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(4)).await, "slowloris kept");
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "cut before the timeout"
    );
    drop(slow_proc);

    // An off-site `next` is refused.
    let mut b = Browser::new(&base);
    let res = b
        .login_next("admin", "flood-test-operator-key-0123456789", "/\t/evil.example")
        .await;
    assert_eq!(res.status, StatusCode::SEE_OTHER, "{}", res.text);
    assert_eq!(res.location, "/admin");
    let res = b.get("/admin/login?next=/%09/evil.example").await;
    assert_eq!(res.location, "/admin");

    let res = reqwest::get(format!("{base}/v1/balance")).await.expect("after");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    drop(proc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_wait_whose_client_went_away_leaves_the_registry() {
    for setup in engines() {
        let t = TestApp::spawn_with(
            setup,
            Opts {
                slow_ms: 4_000,
                upstream_timeout_s: 10,
                ..Opts::default()
            },
        )
        .await;
        let (_, key) = t.customer("GONE_C", "100").await;
        let impatient = reqwest::Client::builder()
            .timeout(Duration::from_millis(700))
            .build()
            .expect("client");
        // The sandbox's slow script (phone ending 995) answers after 4 s.
        let res = impatient
            .post(format!("{}/v1/topups", t.base))
            .bearer_auth(&key)
            .header("Prefer", "wait=20")
            .json(&crate::common::body("5512340995", "20", "gone-1"))
            .send()
            .await;
        assert!(res.is_err(), "{setup:?}: the client should have given up");
        let mut left = usize::MAX;
        for _ in 0..40 {
            left = t.app.hub.waiting();
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(left, 0, "{setup:?}: the wait outlived its client");
        t.stop().await;
    }
}

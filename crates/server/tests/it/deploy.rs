//! The deployment recipe, tested as far as this machine can without Docker:
//!
//! - the `Dockerfile` has the required shape (multi-stage, a `--locked`
//!   release build, a small final stage run by a non-root user, `EXPOSE` of
//!   its `PORT`, a `HEALTHCHECK` and a start command that agree with
//!   `railway.toml`), read as instructions, not grepped;
//! - the binary starts with **only** the recipe's variables (the Dockerfile's
//!   `ENV`, `railway.toml`'s variable list with its references and
//!   placeholders filled, the `PORT` Railway injects) on a per-test
//!   PostgreSQL database, serves the health check path, the `HEALTHCHECK`
//!   command passes against it, and the trusted proxies chosen for Railway's
//!   edge make the client the address the edge wrote;
//! - the old system's variable names start a production gateway, which
//!   refuses the embedded SQLite database until `RECARGA_ALLOW_SQLITE=1`;
//! - imported customers make `serve` and `worker` refuse the sandbox unless
//!   `RECARGA_SANDBOX_WITH_IMPORTED=1`.
//!
//! Every child runs with a cleared environment (`crate::common::procs`).

use crate::common::procs::{Proc, Sim, bin, client, free_port, recarga, run, spawn, start_sim, wait_ready};
use recarga_store::testing::{Engine, engines, fresh, temp_dir};
use recarga_store::{CustomerPatch, NewCustomer, Store};
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A random-looking operator key, as the recipe's placeholder asks for.
const STRONG_ADMIN_KEY: &str = "3f9c1a7e5b2d8046c1e9a3b7d5f20864a1b2c3d4";

fn repo_file(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// Reading the recipe.
// ---------------------------------------------------------------------------

/// One `FROM` of a Dockerfile and its instructions (keyword upper-cased,
/// continuation lines joined).
#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    steps: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn last(&self, keyword: &str) -> Option<&str> {
        self.all(keyword).last().copied()
    }

    /// `ENV A=1 B=2` lines as a map (values without spaces, as this file writes them).
    fn env(&self) -> BTreeMap<String, String> {
        self.all("ENV")
            .iter()
            .flat_map(|line| line.split_whitespace())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect()
    }
}

fn dockerfile_stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.iter().filter(|l| !l.is_empty()) {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (keyword, rest) = (keyword.to_ascii_uppercase(), rest.trim().to_string());
        if keyword == "FROM" {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                image: words.first().map(|w| w.to_string()).unwrap_or_default(),
                name,
                steps: Vec::new(),
            });
        } else {
            let stage = stages.last_mut().expect("an instruction before the first FROM");
            stage.steps.push((keyword, rest));
        }
    }
    stages
}

/// An exec-form instruction (`["recarga", "serve"]`) as its words.
fn exec_form(args: &str) -> Vec<String> {
    let json = args.rfind('[').map(|i| &args[i..]).unwrap_or(args);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{args:?} is not an exec-form list: {e}"))
}

/// `key = "value"` or `key = 10` of railway.toml (its keys are unique).
fn railway_setting(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key && !line.trim_start().starts_with('#')).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The `NAME=VALUE` lines between `# --- variables ---` and `# --- end variables ---`.
fn railway_variables(text: &str) -> Vec<(String, String)> {
    let start = text
        .find("# --- variables ---")
        .expect("railway.toml lists its variables");
    let end = text.find("# --- end variables ---").expect("the variable list ends");
    text[start..end]
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(name, value)| (name.to_string(), value.trim().to_string()))
        .collect()
}

/// The environment of the recipe: the final stage's `ENV`, then railway.toml's
/// variables with every reference or placeholder filled by `fill` (which
/// must know each one: a new one breaks this test until it is taught), then
/// `PORT` as Railway injects it.
fn recipe_env(fill: &dyn Fn(&str) -> Option<String>, port: u16) -> BTreeMap<String, String> {
    let stages = dockerfile_stages(&repo_file("Dockerfile"));
    let mut env = stages.last().expect("a final stage").env();
    for (name, value) in railway_variables(&repo_file("railway.toml")) {
        let literal = !(value.starts_with("${{") || value.starts_with('<'));
        if literal {
            env.insert(name, value);
            continue;
        }
        match fill(&name) {
            Some(v) => env.insert(name, v),
            None if name == "REDIS_URL" => None,
            None => panic!("railway.toml asks for {name}={value}, which this test cannot fill: teach it"),
        };
    }
    env.insert("PORT".into(), port.to_string());
    env
}

/// `bin` with exactly `env`, run in `work`.
fn command_with(env: &BTreeMap<String, String>, work: &Path, args: &[String]) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.env_clear()
        .current_dir(work)
        .envs(env)
        .args(args)
        .stdin(std::process::Stdio::null());
    cmd
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

#[test]
fn dockerfile_and_railway_toml_have_the_required_shape() {
    let docker = repo_file("Dockerfile");
    let stages = dockerfile_stages(&docker);
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let build = stages
        .iter()
        .find(|s| s.all("RUN").iter().any(|r| r.contains("cargo build")))
        .expect("a stage runs cargo build");
    let cargo = build
        .all("RUN")
        .into_iter()
        .find(|r| r.contains("cargo build"))
        .unwrap_or_default();
    for flag in ["--release", "--locked"] {
        assert!(cargo.contains(flag), "the build uses {flag}: {cargo}");
    }
    let build_name = build.name.as_deref().expect("the build stage is named");

    let run = stages.last().expect("final stage");
    assert!(
        !run.all("RUN").iter().any(|r| r.contains("cargo")),
        "the final stage builds nothing"
    );
    assert!(
        !run.image.starts_with("rust") && (run.image.contains("slim") || run.image.contains("distroless")),
        "the final image is small: {}",
        run.image
    );
    assert!(
        run.all("COPY")
            .iter()
            .any(|c| c.contains(&format!("--from={build_name}")) && c.contains("recarga")),
        "the final stage copies the binary from {build_name}: {:?}",
        run.all("COPY")
    );
    let user = run.last("USER").expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(!uid.is_empty() && uid != "root" && uid != "0", "non-root USER: {user}");
    let env = run.env();
    let port = env.get("PORT").expect("ENV PORT");
    let exposed = run.last("EXPOSE").expect("EXPOSE");
    assert_eq!(
        exposed.split('/').next(),
        Some(port.as_str()),
        "EXPOSE matches ENV PORT"
    );
    assert_eq!(env.get("RECARGA_ENV").map(String::as_str), Some("production"));
    let health = run.last("HEALTHCHECK").expect("HEALTHCHECK");
    assert_eq!(exec_form(health), ["recarga", "probe"], "{health}");
    let cmd = exec_form(run.last("CMD").expect("CMD"));

    let railway = repo_file("railway.toml");
    assert_eq!(railway_setting(&railway, "builder").as_deref(), Some("DOCKERFILE"));
    let dockerfile_path = railway_setting(&railway, "dockerfilePath").expect("dockerfilePath");
    assert_eq!(dockerfile_path, "Dockerfile");
    let start = railway_setting(&railway, "startCommand").expect("startCommand");
    assert_eq!(
        start.split_whitespace().collect::<Vec<_>>(),
        cmd,
        "railway.toml and CMD start the same"
    );
    assert_eq!(railway_setting(&railway, "healthcheckPath").as_deref(), Some("/health"));
    assert!(railway_setting(&railway, "restartPolicyType").is_some());
    // SIGTERM to SIGKILL outlasts an upstream call (40 s + its slack).
    let draining: u64 = railway_setting(&railway, "drainingSeconds")
        .and_then(|v| v.parse().ok())
        .expect("drainingSeconds");
    assert!(draining > 45, "drainingSeconds {draining}");

    let ignore = repo_file(".dockerignore");
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for needed in ["target/", ".git/", ".env"] {
        assert!(
            lines.contains(&needed),
            ".dockerignore keeps {needed} out of the context"
        );
    }
    assert!(
        !lines
            .iter()
            .any(|l| ["Cargo.lock", "crates", "crates/", "*.rs"].contains(l)),
        "the sources and the lock file stay in the context"
    );
}

/// The recipe's own variables, nothing else, start a production gateway on
/// PostgreSQL that passes Railway's health check and the image's
/// `HEALTHCHECK`, and sees clients through Railway's edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_starts_with_only_the_recipes_variables() {
    if !engines().contains(&Engine::Postgres) {
        eprintln!("skipped: the recipe needs PostgreSQL (set TEST_DATABASE_URL)");
        return;
    }
    let db = fresh(Engine::Postgres).await;
    let work = temp_dir("recipe");
    let sim = start_sim(&work, "20-40", None).await;
    let sim_env: BTreeMap<&str, String> = sim.gateway_env().into_iter().collect();
    let redis = std::env::var("TEST_REDIS_URL").ok().filter(|v| !v.is_empty());
    let fill = |name: &str| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "REDIS_URL" => redis.clone(),
        "ADMIN_KEY" => Some(STRONG_ADMIN_KEY.to_string()),
        other => sim_env.get(other).cloned(),
    };
    let port = free_port();
    let env = recipe_env(&fill, port);
    let railway = repo_file("railway.toml");
    let start: Vec<String> = railway_setting(&railway, "startCommand")
        .expect("startCommand")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(start.first().map(String::as_str), Some("recarga"));
    let mut server = spawn(command_with(&env, &work, &start[1..]), &work, "recipe");
    let path = railway_setting(&railway, "healthcheckPath").expect("healthcheckPath");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&mut server, &format!("{base}{path}"), Some(StatusCode::OK)).await;
    let health: Value = client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health json");
    assert_eq!(health["mode"], "PRODUCTION", "{health}");
    assert_eq!(health["database"]["engine"], "postgres", "{health}");
    assert_eq!(health["upstream"]["sandbox"], false, "{health}");

    // The image's HEALTHCHECK, run as the image would: same environment.
    let stages = dockerfile_stages(&repo_file("Dockerfile"));
    let check = exec_form(stages.last().and_then(|s| s.last("HEALTHCHECK")).expect("HEALTHCHECK"));
    let probe = run(command_with(&env, &work, &check[1..])).await;
    assert!(probe.ok(), "HEALTHCHECK failed against a healthy gateway: {probe:?}");

    // Railway's edge writes "<client>, <edge hop>" and connects from an
    // internal address: the allow-list must see the client.
    see_clients_through_the_edge(db.store.as_ref(), &base).await;

    server
        .stop(Duration::from_secs(30))
        .await
        .expect("SIGTERM drains and exits");
    let probe = run(command_with(&env, &work, &check[1..])).await;
    assert_eq!(
        probe.code,
        Some(1),
        "HEALTHCHECK passes with nothing listening: {probe:?}"
    );
    drop(sim);
}

async fn see_clients_through_the_edge(store: &dyn Store, base: &str) {
    recarga_service::customers::create(store, &NewCustomer::new("EDGE_001", "Behind the edge"), "test")
        .await
        .expect("customer");
    let (key, _) = recarga_service::keys::issue_key(store, "EDGE_001", None, "test")
        .await
        .expect("key");
    let patch = CustomerPatch {
        ip_allowlist: Some(Some("192.0.2.1".into())),
        ip_allowlist_enabled: Some(true),
        reason: Some("test".into()),
        ..CustomerPatch::default()
    };
    store
        .update_customer("EDGE_001", &patch, "test")
        .await
        .expect("allow-list");
    let http = client();
    let ask = |forwarded: &'static str| {
        http.get(format!("{base}/v1/balance"))
            .bearer_auth(&key)
            .header("x-forwarded-for", forwarded)
            .send()
    };
    let refused = ask("198.51.100.7, 203.0.113.50").await.expect("balance");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["details"]["your_ip"], "198.51.100.7", "{body}");
    let allowed = ask("192.0.2.1, 203.0.113.51").await.expect("balance");
    assert_eq!(
        allowed.status(),
        StatusCode::OK,
        "the listed client passes behind a new edge hop"
    );
}

/// A gateway configured with the old system's names: `NODE_ENV=production`
/// makes it production (so it refuses SQLite), `LATCOM_DIST_API` and
/// `LATCOM_API_KEY` reach the Latcom adapter (a top-up logs in with them),
/// `RECONCILE_KEY` is ignored; each old name is warned about, never echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_variable_names_start_a_production_gateway() {
    let work = temp_dir("legacy-env");
    let data_dir = work.join("data");
    let sim = start_sim(&work, "20-40", None).await;
    let port = free_port();
    let mut env: BTreeMap<String, String> = sim.gateway_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let base_url = env.remove("LATCOM_BASE_URL").expect("base url");
    let dist = env.remove("LATCOM_DIST_API_KEY").expect("dist key");
    env.extend(
        [
            ("LATCOM_DIST_API", base_url.as_str()),
            ("LATCOM_API_KEY", dist.as_str()),
            ("NODE_ENV", "production"),
            ("RECONCILE_KEY", "old-reconcile-secret"),
            ("ADMIN_KEY", STRONG_ADMIN_KEY),
            ("RECARGA_DATA_DIR", data_dir.to_str().expect("utf-8 path")),
            ("RECARGA_BIND", "127.0.0.1"),
            ("RECARGA_LOG", "info,sqlx=warn"),
            ("NO_COLOR", "1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    env.insert("PORT".into(), port.to_string());
    let serve = ["serve".to_string()];

    let refused = run(command_with(&env, &work, &serve)).await;
    assert!(!refused.ok() && refused.code.is_some(), "{refused:?}");
    assert!(
        refused.stderr.contains("refuses the embedded SQLite") && refused.stderr.contains("RECARGA_ALLOW_SQLITE=1"),
        "NODE_ENV=production made it production: {}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("needs LATCOM"),
        "the old Latcom names were read: {}",
        refused.stderr
    );
    for old in ["LATCOM_DIST_API", "LATCOM_API_KEY", "NODE_ENV", "RECONCILE_KEY"] {
        assert_eq!(
            refused
                .stderr
                .lines()
                .filter(|l| l.contains("WARN") && (l.contains(&format!("{old} ")) || l.contains(&format!("{old}="))))
                .count(),
            1,
            "one warning for {old}: {}",
            refused.stderr
        );
    }
    for secret in [dist.as_str(), "old-reconcile-secret", STRONG_ADMIN_KEY] {
        assert!(
            !refused.stderr.contains(secret),
            "a value was echoed: {}",
            refused.stderr
        );
    }
    assert!(
        !data_dir.join("recarga.db").exists(),
        "refused before opening the database"
    );

    env.insert("RECARGA_ALLOW_SQLITE".into(), "1".into());
    let mut server = spawn(command_with(&env, &work, &serve), &work, "legacy-env");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&mut server, &format!("{base}/health"), Some(StatusCode::OK)).await;
    sell_one(&mut server, &sim, &base, &work, &env).await;
}

/// Sells one top-up through `base` (so the adapter logs in with the
/// settings it was given) and checks the simulator saw the login.
async fn sell_one(server: &mut Proc, sim: &Sim, base: &str, work: &Path, env: &BTreeMap<String, String>) {
    let args: Vec<String> = [
        "customer",
        "create",
        "--id",
        "OLD_ENV_001",
        "--name",
        "Old env",
        "--credit",
        "100",
    ]
    .map(str::to_string)
    .to_vec();
    let created = run(command_with(env, work, &args)).await;
    assert!(created.ok(), "{created:?}");
    let key = created.json["api_key"].as_str().expect("api_key").to_string();
    let res = client()
        .post(format!("{base}/v1/topups"))
        .bearer_auth(&key)
        .header("prefer", "wait=20")
        .json(&serde_json::json!({"phone": "5512345678", "amount": "20", "reference": "old-env-1"}))
        .send()
        .await
        .expect("top-up");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "SUCCESS", "{body}\n{}", server.logs());
    let journal = sim.journal().await.expect("journal");
    assert!(journal["logins"].as_u64().unwrap_or(0) >= 1, "{journal}");
}

/// Customers imported from the old system are never served by the simulator:
/// `serve` and `worker` refuse the sandbox, in development too, until
/// `RECARGA_SANDBOX_WITH_IMPORTED=1` says this is a rehearsal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_customers_refuse_the_sandbox() {
    for engine in engines() {
        let db = fresh(engine).await;
        recarga_service::customers::create(db.store.as_ref(), &NewCustomer::new("HAZ_001", "HAZ"), "test")
            .await
            .expect("customer");
        let work = temp_dir("imported");
        let command = |role: &str, port: u16| {
            let mut cmd = recarga(&work);
            cmd.arg(role)
                .env("DATABASE_URL", &db.url)
                .env("PORT", port.to_string())
                .env("RECARGA_BIND", "127.0.0.1")
                .env("RECARGA_DEMO", "false");
            cmd
        };
        // Not imported yet: the sandbox starts as always.
        let port = free_port();
        let mut before = spawn(command("serve", port), &work, "before-import");
        wait_ready(
            &mut before,
            &format!("http://127.0.0.1:{port}/health"),
            Some(StatusCode::OK),
        )
        .await;
        before.stop(Duration::from_secs(30)).await.expect("stops");

        mark_imported(engine, &db.url, "HAZ_001").await;
        assert_eq!(db.store.count_imported_customers().await.expect("count"), 1);
        for role in ["serve", "worker"] {
            let refused = run(command(role, free_port())).await;
            assert!(
                !refused.ok() && refused.code.is_some(),
                "{engine:?} {role}: {refused:?}"
            );
            assert!(
                refused.stderr.contains("1 customer(s) imported")
                    && refused.stderr.contains("RECARGA_SANDBOX_WITH_IMPORTED=1"),
                "{engine:?} {role}: {}",
                refused.stderr
            );
        }
        let port = free_port();
        let mut cmd = command("serve", port);
        cmd.env("RECARGA_SANDBOX_WITH_IMPORTED", "1");
        let mut rehearsal = spawn(cmd, &work, "rehearsal");
        wait_ready(
            &mut rehearsal,
            &format!("http://127.0.0.1:{port}/health"),
            Some(StatusCode::OK),
        )
        .await;
    }
}

/// What the importer leaves behind: an import run, and the customer naming it.
async fn mark_imported(engine: Engine, url: &str, customer: &str) {
    let statements = [
        "INSERT INTO import_runs (id, source, started_at) VALUES ('run-test', 'postgres://old', 1)".to_string(),
        format!("UPDATE customers SET import_run = 'run-test' WHERE id = '{customer}'"),
    ];
    for sql in statements {
        let sql = sqlx::AssertSqlSafe(sql);
        match engine {
            Engine::Sqlite => {
                let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
                sqlx::query(sql).execute(&pool).await.expect("mark imported");
                pool.close().await;
            }
            Engine::Postgres => {
                let pool = sqlx::PgPool::connect(url).await.expect("postgres");
                sqlx::query(sql).execute(&pool).await.expect("mark imported");
                pool.close().await;
            }
        }
    }
}

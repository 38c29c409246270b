//! `recarga`: thin wiring from the command line to the library.

use recarga_server::cli::{self, Cli, Command};
use recarga_server::config::RuntimeConfig;
use recarga_server::serve::{self, Roles};
use recarga_server::state::{self, App};
use recarga_server::{legacy_env, probe};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    // The old system's variable names, read before clap parses (legacy_env.rs).
    let aliases = legacy_env::plan(&legacy_env::process_env());
    let cli = legacy_env::parse_cli(&aliases);
    if let Command::Probe(args) = &cli.command {
        // The HEALTHCHECK: no logs, no runtime beyond one request.
        return match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => std::process::ExitCode::from(rt.block_on(probe::run(args)) as u8),
            Err(_) => std::process::ExitCode::FAILURE,
        };
    }
    init_logs(&cli.log, cli.log_format == "json");
    for warning in &aliases.warnings {
        tracing::warn!(deprecated = true, "{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(rt) => {
            serve(
                &cli.db,
                rt,
                Roles {
                    http: true,
                    workers: true,
                },
            )
            .await
        }
        Command::Worker(rt) => {
            serve(
                &cli.db,
                rt,
                Roles {
                    http: false,
                    workers: true,
                },
            )
            .await
        }
        Command::LatcomSim(settings) => latcom_sim(settings).await,
        Command::EnvExample => {
            print!("{}", cli::env_example());
            Ok(0)
        }
        other => {
            let store = state::open_store(&cli.db).await?;
            let (out, code) = cli::run_operator(store.as_ref(), other).await?;
            match out {
                // A report for people (`import legacy --table`).
                serde_json::Value::String(text) => print!("{text}"),
                json => println!("{}", serde_json::to_string_pretty(&json)?),
            }
            Ok(code)
        }
    }
}

async fn serve(db: &recarga_server::config::DbConfig, rt: RuntimeConfig, roles: Roles) -> anyhow::Result<i32> {
    rt.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    rt.validate_store(db)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let store = state::open_store(db).await?;
    let imported = store.count_imported_customers().await?;
    rt.validate_sandbox_with(imported)
        .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    let demo_key = if roles.http {
        cli::ensure_demo_customer(store.as_ref(), &rt).await?
    } else {
        None
    };
    let listener = if roles.http {
        let addr = format!("{}:{}", rt.bind, rt.port);
        Some(
            tokio::net::TcpListener::bind(&addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?,
        )
    } else {
        None
    };
    let redis = state::open_redis(db)?;
    let (app, _sim) = App::build(store, rt, redis).await?;
    if app.is_sandbox() {
        let demo_exists = app.config.demo && app.store.get_customer(cli::DEMO_ID).await?.is_some();
        print_sandbox_banner(&app, db, listener.as_ref(), demo_key.as_deref(), demo_exists);
    }
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining");
        signal.cancel();
    });
    serve::run(app, listener, roles, shutdown).await?;
    Ok(0)
}

async fn latcom_sim(settings: recarga_server::config::SimSettings) -> anyhow::Result<i32> {
    use recarga_upstream::sim::{SimConfig, Simulator};
    let mut config = SimConfig {
        latency_min_ms: settings.latency_ms.0,
        latency_max_ms: settings.latency_ms.1,
        token_lifetime_s: settings.token_lifetime_s,
        ..SimConfig::default()
    };
    if let Some(json) = &settings.config_json {
        let mut merged = serde_json::to_value(&config)?;
        let patch: serde_json::Value =
            serde_json::from_str(json).map_err(|e| anyhow::anyhow!("LATCOM_SIM_CONFIG is not JSON: {e}"))?;
        let (Some(target), Some(fields)) = (merged.as_object_mut(), patch.as_object()) else {
            anyhow::bail!("LATCOM_SIM_CONFIG must be a JSON object");
        };
        target.extend(fields.clone());
        config = serde_json::from_value(merged).map_err(|e| anyhow::anyhow!("LATCOM_SIM_CONFIG: {e}"))?;
    }
    let addr = format!("{}:{}", settings.bind, settings.port);
    let (_sim, bound) = Simulator::spawn(config.clone(), &addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    println!("Latcom simulator on http://{bound} (journal: /__sim/journal, settings: /__sim/config)");
    println!(
        "  point the gateway at it: RECARGA_UPSTREAM=latcom LATCOM_BASE_URL=http://{bound} LATCOM_USERNAME={} \\\n    LATCOM_PASSWORD={} LATCOM_DIST_API_KEY={} LATCOM_USER_UID={}",
        config.username, config.password, config.dist_api, config.user_uid
    );
    wait_for_signal().await;
    Ok(0)
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn print_sandbox_banner(
    app: &App,
    db: &recarga_server::config::DbConfig,
    listener: Option<&tokio::net::TcpListener>,
    demo_key: Option<&str>,
    demo_exists: bool,
) {
    let port = listener
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port())
        .unwrap_or(app.config.port);
    let line = "=".repeat(72);
    println!("{line}");
    println!("  SANDBOX MODE: top-ups go to the built-in Latcom simulator; no real money moves.");
    println!(
        "  database: {} ({})",
        app.store.engine(),
        recarga_server::state::redact_url(&db.url())
    );
    if listener.is_some() {
        println!("  listening on http://127.0.0.1:{port}");
    }
    match demo_key {
        Some(key) => {
            println!("  demo customer: DEMO_001 with 10,000.00 MXN; API key (shown once):");
            println!("    {key}");
            println!("  try:");
            println!(
                "    curl -s -X POST http://127.0.0.1:{port}/v1/topups -H 'Authorization: Bearer {key}' \\\n      -H 'Content-Type: application/json' -H 'Prefer: wait=10' \\\n      -d '{{\"phone\":\"5512345678\",\"amount\":\"20\",\"reference\":\"demo-1\"}}'"
            );
        }
        None if listener.is_some() && demo_exists => {
            println!("  demo customer DEMO_001 exists; issue a new key with: recarga key create --customer DEMO_001");
        }
        None => {}
    }
    if app.config.admin_key.is_none() {
        println!(
            "  operator key for this run (set ADMIN_KEY to choose one): {}",
            app.admin_key
        );
    }
    println!("{line}");
}

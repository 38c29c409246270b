//! Issue 16, reconciliation, as an operator lives it: top-ups go through the
//! real gateway and the Latcom simulator (successes, definite failures and
//! two UNKNOWNs, one delivered and one not); the simulator's journal is
//! exported as a Latcom statement in the built-in format with injected
//! differences of every class and awkward rows (a float phone, an id in
//! scientific notation, a bad date, a blank line, a BOM, phone and time-zone
//! variants); `recarga reconcile import` finds exactly those differences,
//! totals tie out to the centavo, re-importing the same file counts nothing
//! twice, and `recarga reconcile apply` settles the UNKNOWNs through the
//! ordinary resolution with the ledger consistent and `recarga audit`
//! clean. A carrier claim (dates only, USD, through a crosswalk file) is an
//! exceptions list: matched within a business day, never "absent".

use crate::common::pages::{Browser, PASSWORD, operator};
use crate::common::{Opts, TestApp, body, engines};
use chrono::{DateTime, FixedOffset};
use clap::Parser;
use recarga_domain::{Money, TopupStatus};
use recarga_server::cli::{Cli, run_operator};
use recarga_store::{Store, Topup};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const FINAL_WITHIN: Duration = Duration::from_secs(20);

/// Runs `recarga <args>` against the test's store, as the binary would.
async fn cli(store: &dyn Store, args: &[&str]) -> Result<Value, String> {
    let cli = Cli::try_parse_from(std::iter::once("recarga").chain(args.iter().copied())).map_err(|e| e.to_string())?;
    let (out, code) = run_operator(store, cli.command).await.map_err(|e| e.to_string())?;
    if code != 0 {
        return Err(format!("exit {code}: {out}"));
    }
    Ok(out)
}

fn at_offset(ms: i64, offset_s: i32) -> String {
    let offset = FixedOffset::east_opt(offset_s).expect("offset");
    DateTime::from_timestamp_millis(ms)
        .expect("time")
        .with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%.6f%:z")
        .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

const HEADER: &str = "PRODUCT_TYPE,id,DATETIME,TRANSACTION_ID,DISTRIBUTOR,VENDOR_TRANSACTION_ID,DIST_TRANSID,MSISDN,\
                      CURRENCY,AMOUNT,SKUID,STATUS,VENDOR_RESPONSE_MESSAGE,VENDOR_RESPONSE_CODE";

/// One Latcom report row.
#[allow(clippy::too_many_arguments)]
fn row(n: usize, time: &str, lt: &str, ven: &str, dist: &str, phone: &str, amount: &str, status: &str) -> String {
    let msg = if status == "Success" {
        "Success"
    } else {
        "Action not allowed"
    };
    format!("2,{n},{time},{lt},Latcom,{ven},{dist},{phone},USD,{amount},Topup,{status},{msg},0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_reconcile_to_the_centavo_and_settle_unknowns() {
    for setup in engines().into_iter().filter(|s| s.redis_url.is_none()) {
        let opts = Opts {
            // UNKNOWNs stay UNKNOWN: no status query settles them first.
            status_check_base_s: 3_600,
            ..Opts::default()
        };
        let t = TestApp::spawn_with(setup, opts).await;
        story(&t, &format!("{setup:?}")).await;
        t.stop().await;
    }
}

async fn topup(t: &TestApp, key: &str, phone: &str, amount: &str, reference: &str) -> Topup {
    let (status, v) = t.topup(key, body(phone, amount, reference), Some(5)).await;
    assert!(status.is_success(), "{reference}: {status} {v}");
    let id = v["id"]
        .as_str()
        .or(v["transaction_id"].as_str())
        .expect("id")
        .to_string();
    t.wait_for(&id, FINAL_WITHIN, |x| {
        x.status.is_final() || x.status == TopupStatus::Unknown
    })
    .await
}

async fn story(t: &TestApp, ctx: &str) {
    let (_, key) = t.customer("REC_1", "5000").await;
    // All at once: the UNKNOWNs' timeouts overlap.
    let asks = [
        ("5512340001", "20", "ok"),
        ("5512340002", "50", "differs"),
        ("5512340991", "30", "failed"),
        ("5512340004", "30", "absent"),
        ("5512340993", "100", "unk-delivered"),
        ("5512340994", "70", "unk-lost"),
        ("5512340992", "40", "both-failed"),
        ("5512340005", "40", "by-carrier"),
        ("5512340006", "20", "by-phone"),
        ("5512340007", "60", "by-ours"),
    ];
    let done = futures::future::join_all(asks.iter().map(|(phone, amount, r)| topup(t, &key, phone, amount, r))).await;
    let [
        ok,
        differs,
        failed,
        absent,
        unknown_delivered,
        unknown_lost,
        both_failed,
        by_carrier,
        by_phone,
        by_ours,
    ] = <[Topup; 10]>::try_from(done).expect("ten top-ups");
    for (x, want) in [
        (&ok, TopupStatus::Success),
        (&failed, TopupStatus::Failed),
        (&unknown_delivered, TopupStatus::Unknown),
        (&unknown_lost, TopupStatus::Unknown),
        (&both_failed, TopupStatus::Failed),
        (&by_carrier, TopupStatus::Success),
    ] {
        assert_eq!(x.status, want, "{ctx}: {}", x.reference);
    }
    let balance_before = t.balance("REC_1").await;
    // A top-up imported from the old system: its `dist_transid` was the
    // customer's reference, and nothing else of it is known.
    let legacy = legacy_topup(
        t,
        "RLR1742324000123",
        "HAZ-778",
        "5512340008",
        5_000,
        ok.created_at,
        "SUCCESS",
    )
    .await;
    // An old PENDING row, imported UNKNOWN with nothing held: its carrier id
    // in the statement settles it, and SUCCESS debits what the old system charged.
    let legacy_unknown = legacy_topup(
        t,
        "RLR1742324000456",
        "RLR1742324000456",
        "5512340009",
        3_000,
        ok.created_at,
        "UNKNOWN",
    )
    .await;

    // The simulator's ground truth, exported as Latcom's report.
    let journal = t.sandbox.journal();
    let j = |x: &Topup| journal.get(&x.id).cloned().expect("journaled");
    let when = |x: &Topup, offset_s: i32| at_offset(x.created_at + 1_500, offset_s);
    let sent = |x: &Topup| x.amount_sent.to_decimal_string();
    let et = -4 * 3600;
    let lines = [
        // Matched by Latcom's id; the phone with its country code.
        row(
            1,
            &when(&ok, et),
            &j(&ok).trans_id,
            &j(&ok).ven_transid,
            "",
            "525512340001",
            &sent(&ok),
            "Success",
        ),
        // Amount differs: 10.00 more than we sent.
        row(
            2,
            &when(&differs, et),
            &j(&differs).trans_id,
            &j(&differs).ven_transid,
            "",
            "5512340002",
            &(differs.amount_sent.checked_add(Money::major(10)).expect("sum")).to_decimal_string(),
            "Success",
        ),
        // Delivered at Latcom (with a carrier id), FAILED with us.
        row(
            3,
            &when(&failed, et),
            &j(&failed).trans_id,
            "114368000777",
            "",
            "5512340991",
            &sent(&failed),
            "Success",
        ),
        // `absent` is left out of the statement.
        // Our UNKNOWN, delivered: Latcom has it with the carrier's id (we never heard its ids).
        row(
            4,
            &when(&unknown_delivered, et),
            &j(&unknown_delivered).trans_id,
            &j(&unknown_delivered).ven_transid,
            "",
            "5512340993",
            &sent(&unknown_delivered),
            "Success",
        ),
        // `unknown_lost` is absent: never reached Latcom's books.
        row(
            5,
            &when(&both_failed, et),
            &j(&both_failed).trans_id,
            "",
            "",
            "5512340992",
            &sent(&both_failed),
            "Fail",
        ),
        // Only the carrier's id.
        row(
            6,
            &when(&by_carrier, et),
            "",
            &j(&by_carrier).ven_transid,
            "",
            "5512340005",
            &sent(&by_carrier),
            "Success",
        ),
        // No ids at all, the time in UTC and 3 minutes late: phone + amount + window.
        row(
            7,
            &at_offset(by_phone.created_at + 180_000, 0),
            "",
            "",
            "",
            "55 1234 0006",
            &sent(&by_phone),
            "Success",
        ),
        // Only our id.
        row(
            8,
            &when(&by_ours, et),
            "",
            "",
            &by_ours.id,
            "5512340007",
            &sent(&by_ours),
            "Success",
        ),
        // Unknown to us, and a second line for `ok` (billed twice).
        row(
            9,
            &when(&ok, et),
            "LT99999999",
            "114368000999",
            "",
            "5599990000",
            "150",
            "Success",
        ),
        row(
            10,
            &when(&ok, et),
            &j(&ok).trans_id,
            &j(&ok).ven_transid,
            "",
            "5512340001",
            &sent(&ok),
            "Success",
        ),
        // The imported one, by the reference the old system sent as our id.
        row(11, &when(&ok, et), "LT77", "", "haz-778", "5512340008", "50", "Success"),
        row(
            12,
            &when(&ok, et),
            "LT78",
            "114368000456",
            "RLR1742324000456",
            "5512340009",
            "30",
            "Success",
        ),
    ];
    let awkward = [
        row(11, &when(&ok, et), "LT1", "", "", "5512340001.0", "20", "Success"),
        row(
            12,
            &when(&ok, et),
            "LT2",
            "1.14368E+11",
            "",
            "5512340001",
            "20",
            "Success",
        ),
        row(13, "18/03/2025", "LT3", "", "", "5512340001", "20", "Success"),
    ];
    let text = format!("\u{feff}{HEADER}\n{}\n\n{}\n", lines.join("\n"), awkward.join("\n"));
    let dir = recarga_store::testing::temp_dir("reconcile");
    let file = write(&dir, "latcom-march.csv", &text);
    let run = cli(
        t.store(),
        &[
            "reconcile",
            "import",
            "--source",
            "latcom",
            "--file",
            &file,
            "--actor",
            "ops@recarga",
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{ctx}: import: {e}"));

    let classes = &run["classes"];
    let want = [
        ("matched", 6), // ok, both_failed, by_carrier, by_phone, by_ours, legacy
        ("amount_differs", 1),
        ("delivered_but_failed", 1),
        ("success_not_in_statement", 1),
        ("unknown_to_us", 2),
        ("unknown_with_evidence", 3),
    ];
    for (class, n) in want {
        assert_eq!(classes[class], n, "{ctx}: {class}: {run:#}");
    }
    assert_eq!(run["rejected"], 3, "{ctx}: {run:#}");
    let rejected_lines: Vec<u64> = run["rejects"]
        .as_array()
        .expect("rejects")
        .iter()
        .map(|r| r["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(
        rejected_lines,
        vec![15, 16, 17],
        "{ctx}: the blank line 14 is no row: {run:#}"
    );
    assert!(
        run["rejects"][0]["reason"].as_str().expect("reason").contains(".0"),
        "{ctx}"
    );
    assert!(
        run["rejects"][1]["reason"]
            .as_str()
            .expect("reason")
            .contains("scientific"),
        "{ctx}"
    );

    // Totals to the centavo: the statement's own sum, and per class in MXN.
    let line_sum: i64 = [
        &ok,
        &failed,
        &unknown_delivered,
        &both_failed,
        &by_carrier,
        &by_phone,
        &by_ours,
        &ok,
    ]
    .iter()
    .map(|x| x.amount_sent.0)
    .sum::<i64>()
        + differs.amount_sent.0
        + 1_000
        + 15_000
        + 5_000
        + 3_000;
    assert_eq!(run["statement_total"], Money(line_sum).to_decimal_string(), "{ctx}");
    let tied: i64 = run["totals"]
        .as_object()
        .expect("totals")
        .values()
        .map(|c| {
            Money::parse_decimal(c["statement_amount"].as_str().expect("amount"))
                .expect("money")
                .0
        })
        .sum();
    assert_eq!(tied, line_sum, "{ctx}: the classes tie out to the statement");
    let mxn = |class: &str| run["totals"][class]["mxn"].as_str().expect("mxn").to_string();
    let faces = |xs: &[&Topup]| Money(xs.iter().map(|x| x.face_value.0).sum()).to_decimal_string();
    assert_eq!(
        mxn("matched"),
        faces(&[&ok, &both_failed, &by_carrier, &by_phone, &by_ours, &legacy]),
        "{ctx}"
    );
    assert_eq!(
        mxn("unknown_with_evidence"),
        faces(&[&unknown_delivered, &unknown_lost, &legacy_unknown]),
        "{ctx}"
    );
    assert_eq!(mxn("success_not_in_statement"), faces(&[&absent]), "{ctx}");
    let day = recarga_domain::reconcile::business_day(ok.created_at).to_string();
    assert_eq!(run["by_day"][&day]["matched"]["count"], 6, "{ctx}: {run:#}");
    assert_eq!(run["by_month"][&day[..7]]["unknown_to_us"]["count"], 2, "{ctx}");

    // Each match names its rule.
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    let shown = cli(t.store(), &["reconcile", "show", "--run", &run_id, "--limit", "1000"])
        .await
        .expect("show");
    let rows = shown["rows"].as_array().expect("rows");
    let rule_of = |id: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r["topup_id"] == id)
            .map(|r| {
                format!(
                    "{}/{}",
                    r["class"].as_str().unwrap_or(""),
                    r["rule"].as_str().unwrap_or("-")
                )
            })
            .collect()
    };
    assert_eq!(
        rule_of(&ok.id),
        vec!["matched/upstream_id", "unknown_to_us/upstream_id"],
        "{ctx}"
    );
    assert_eq!(rule_of(&by_carrier.id), vec!["matched/carrier_id"], "{ctx}");
    assert_eq!(rule_of(&by_phone.id), vec!["matched/phone_amount_window"], "{ctx}");
    assert_eq!(rule_of(&by_ours.id), vec!["matched/our_id"], "{ctx}");
    assert_eq!(
        rule_of(&legacy.id),
        vec!["matched/our_id"],
        "{ctx}: an imported top-up matches like any other"
    );
    assert_eq!(rule_of(&failed.id), vec!["delivered_but_failed/upstream_id"], "{ctx}");
    assert_eq!(rule_of(&absent.id), vec!["success_not_in_statement/-"], "{ctx}");
    let proposals: HashMap<String, String> = shown["proposals"]
        .as_array()
        .expect("proposals")
        .iter()
        .map(|p| {
            (
                p["topup_id"].as_str().unwrap_or("").to_string(),
                p["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(proposals.len(), 3, "{ctx}: {proposals:?}");
    assert_eq!(proposals[&legacy_unknown.id], "success", "{ctx}");
    assert_eq!(proposals[&unknown_delivered.id], "success", "{ctx}");
    assert_eq!(proposals[&unknown_lost.id], "failed", "{ctx}");
    // Nothing is applied without an operator.
    assert_eq!(
        t.store()
            .get_topup(&unknown_lost.id)
            .await
            .expect("read")
            .expect("row")
            .status,
        TopupStatus::Unknown
    );

    // The same file again is recognised and not counted twice.
    let again = cli(
        t.store(),
        &["reconcile", "import", "--source", "latcom", "--file", &file],
    )
    .await
    .expect("again");
    assert_eq!(
        (again["duplicate"].as_bool(), again["run_id"].as_str()),
        (Some(true), Some(run_id.as_str())),
        "{ctx}"
    );
    let listed = cli(t.store(), &["reconcile", "list"]).await.expect("list");
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(1), "{ctx}");

    // An operator applies one from the command line (an actor and a reason
    // are required), the other from the panel.
    let refused = cli(
        t.store(),
        &[
            "reconcile",
            "apply",
            "--run",
            &run_id,
            "--actor",
            "ops@recarga",
            "--reason",
            " ",
        ],
    )
    .await;
    assert!(refused.is_err(), "{ctx}: a reason is required");
    let applied = cli(
        t.store(),
        &[
            "reconcile",
            "apply",
            "--run",
            &run_id,
            "--topup",
            &unknown_delivered.id,
            "--actor",
            "ops@recarga",
            "--reason",
            "March statement",
        ],
    )
    .await
    .expect("apply");
    assert_eq!(applied["applied"], 1, "{ctx}: {applied}");
    let settled = t
        .store()
        .get_topup(&unknown_delivered.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(settled.status, TopupStatus::Success, "{ctx}");
    assert_eq!(
        settled.upstream_ven_transid,
        Some(j(&unknown_delivered).ven_transid),
        "{ctx}"
    );
    assert_eq!(
        t.store()
            .get_topup(&unknown_lost.id)
            .await
            .expect("read")
            .expect("row")
            .status,
        TopupStatus::Unknown
    );

    panel(t, ctx, &run_id, &text).await;

    let released = t.store().get_topup(&unknown_lost.id).await.expect("read").expect("row");
    assert_eq!(released.status, TopupStatus::Failed, "{ctx}");
    let imported = t
        .store()
        .get_topup(&legacy_unknown.id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(imported.status, TopupStatus::Success, "{ctx}");
    assert_eq!(imported.upstream_ven_transid.as_deref(), Some("114368000456"), "{ctx}");
    assert_eq!(
        t.balance("REC_1").await,
        balance_before
            .checked_add(unknown_lost.held)
            .and_then(|b| b.checked_sub(Money(3_000)))
            .expect("sum"),
        "{ctx}: the lost one's hold came back; the imported one was debited its old price"
    );
    let again = cli(
        t.store(),
        &[
            "reconcile",
            "apply",
            "--run",
            &run_id,
            "--actor",
            "ops@recarga",
            "--reason",
            "again",
        ],
    )
    .await
    .expect("apply again");
    assert_eq!(again["applied"], 0, "{ctx}: nothing is applied twice");
    let audit = t
        .store()
        .audit_entries(Some(&run_id), None, 10)
        .await
        .expect("audit rows");
    assert_eq!(
        audit.iter().filter(|a| a.action == "reconcile.apply").count(),
        3,
        "{ctx}: one per operator step"
    );
    assert!(audit.iter().any(|a| a.actor == "ops@recarga"), "{ctx}");
    assert!(audit.iter().any(|a| a.actor == "admin@recarga.test"), "{ctx}");
    let resolved = t
        .store()
        .audit_entries(Some(&unknown_lost.id), None, 10)
        .await
        .expect("audit rows");
    assert!(
        resolved
            .iter()
            .any(|a| a.action == "topup.resolve" && a.actor == "admin@recarga.test"),
        "{ctx}"
    );
    let audit = cli(t.store(), &["audit"]).await.expect("recarga audit is clean");
    assert_eq!(audit["clean"], true, "{ctx}");

    dispute_pack(t, ctx, &dir, &run_id, &run).await;
    statement(t, ctx, &key).await;
    carrier_claim(t, ctx, &dir, &ok, &absent).await;
}

/// Writes a top-up as `recarga import legacy` does (origin `legacy`,
/// nothing held, read-only history), SUCCESS in the old system.
async fn legacy_topup(t: &TestApp, id: &str, reference: &str, phone: &str, face: i64, at: i64, status: &str) -> Topup {
    const INSERT: &str = "INSERT INTO topups (id, customer_id, reference, request_hash, phone, face_value, product_id,
            amount_sent, vat, delivered, discount_bps, currency, held, status, next_attempt_at, created_at,
            updated_at, completed_at, origin, legacy_price)
         VALUES ($1, 'REC_1', $2, 'legacy', $3, $4, 'TFE_MXN_20_TO_2000', $4, 0, $4, 0, 'MXN', 0, $6, $5, $5,
                 $5, $5, 'legacy', $4)";
    match t.engine {
        recarga_store::testing::Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&t.db.url).await.expect("connect");
            let q = sqlx::query(INSERT)
                .bind(id)
                .bind(reference)
                .bind(phone)
                .bind(face)
                .bind(at)
                .bind(status);
            q.execute(&pool).await.expect("insert legacy");
            pool.close().await;
        }
        recarga_store::testing::Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&t.db.url).await.expect("connect");
            let q = sqlx::query(INSERT)
                .bind(id)
                .bind(reference)
                .bind(phone)
                .bind(face)
                .bind(at)
                .bind(status);
            q.execute(&pool).await.expect("insert legacy");
            pool.close().await;
        }
    }
    t.store().get_topup(id).await.expect("read").expect("stored")
}

/// The dispute pack: its totals tie out, its CSV carries our evidence and
/// reads again as a Latcom statement.
async fn dispute_pack(t: &TestApp, ctx: &str, dir: &Path, run_id: &str, run: &Value) {
    let out = dir.join("pack.zip").display().to_string();
    let packed = cli(t.store(), &["reconcile", "pack", "--run", run_id, "--out", &out])
        .await
        .expect("pack");
    let s = &packed["summary"];
    assert_eq!(s["claimed"]["lines"], 12, "{ctx}: {s:#}");
    assert_eq!(s["agreed"]["lines"], 6, "{ctx}");
    assert_eq!(s["disputed"]["lines"], 6, "{ctx}");
    assert_eq!(s["claimed"]["amount"], run["statement_total"], "{ctx}");
    let amount = |v: &Value| Money::parse_decimal(v.as_str().expect("amount")).expect("money").0;
    assert_eq!(
        amount(&s["claimed"]["amount"]),
        amount(&s["agreed"]["amount"]) + amount(&s["disputed"]["amount"]),
        "{ctx}"
    );
    let by_class: i64 = s["disputed_by_class"]
        .as_object()
        .expect("classes")
        .values()
        .map(|c| amount(&c["amount"]))
        .sum();
    assert_eq!(by_class, amount(&s["disputed"]["amount"]), "{ctx}: the classes add up");
    assert_eq!(s["ours_not_in_statement"]["lines"], 2, "{ctx}");

    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).expect("zip")).expect("a zip");
    let mut read = |name: &str| {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut zip.by_name(name).expect(name), &mut text).expect("text");
        text
    };
    let disputed = read("disputed.csv");
    assert_eq!(disputed.lines().count(), 7, "{ctx}: header + 6 lines: {disputed}");
    let header = disputed.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("PRODUCT_TYPE,id,DATETIME") && header.contains("recarga_ledger"),
        "{ctx}: {header}"
    );
    assert!(
        disputed.contains("delivered_but_failed") && disputed.contains("dist_transid"),
        "{ctx}: the request sent is evidence"
    );
    let exchanges: Value = serde_json::from_str(&read("exchanges.json")).expect("json");
    assert!(
        exchanges.as_object().is_some_and(|m| m.len() >= 4),
        "{ctx}: {exchanges}"
    );
    let again = write(dir, "disputed.csv", &disputed);
    let reread = cli(
        t.store(),
        &["reconcile", "import", "--source", "latcom", "--file", &again],
    )
    .await
    .expect("re-import");
    assert_eq!(
        (reread["lines"].as_u64(), reread["rejected"].as_u64()),
        (Some(6), Some(0)),
        "{ctx}: {reread:#}"
    );
    assert_eq!(reread["statement_total"], s["disputed"]["amount"], "{ctx}");
}

/// A carrier's claim: dates only (Mexico City), whole USD bundle prices read
/// through a crosswalk, no status: an exceptions list.
async fn carrier_claim(t: &TestApp, ctx: &str, dir: &Path, ok: &Topup, absent: &Topup) {
    let crosswalk = write(
        dir,
        "crosswalk.json",
        r#"{"entries": [{"source": "carrier", "product": "XOOM20", "amount": "1", "face_value": "20"},
                        {"source": "carrier", "product": "XOOM30", "face_value": "30"}]}"#,
    );
    let date = |x: &Topup| {
        recarga_domain::reconcile::business_day(x.created_at)
            .format("%d/%m/%Y")
            .to_string()
    };
    let text = format!(
        "FECHA,NUM_TELEFONO,COD_BONO,SEC_ACTUACION,ImpUSD,CANTIDAD_ADI,CANTIDAD_MITOPUP,DIF\n\
         {},5512340001,XOOM20,,1,1,0,1\n\
         {},5512349999,XOOM30,114368001234,2,1,0,1\n\
         {},5512340004,BFRIQUIN,114368000000.0,10,1,0,1\n",
        date(ok),
        date(ok),
        date(absent),
    );
    let file = write(dir, "temm.csv", &text);
    let cw = crosswalk.as_str();
    let run = cli(
        t.store(),
        &[
            "reconcile",
            "import",
            "--source",
            "carrier",
            "--file",
            &file,
            "--crosswalk",
            cw,
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{ctx}: carrier import: {e}"));
    assert_eq!(run["kind"], "exceptions", "{ctx}");
    assert_eq!(run["classes"]["matched"], 1, "{ctx}: {run:#}");
    assert_eq!(run["classes"]["unknown_to_us"], 1, "{ctx}: {run:#}");
    assert_eq!(
        run["classes"]["success_not_in_statement"], 0,
        "{ctx}: an exceptions list says nothing of absence"
    );
    assert_eq!(run["rules"]["phone_amount_window"], 1, "{ctx}: {run:#}");
    assert_eq!(run["rejected"], 1, "{ctx}: the id Excel rounded");
    assert_eq!(run["statement_total"], "3.00", "{ctx}: USD, as the carrier bills");
    assert_eq!(
        run["totals"]["unknown_to_us"]["mxn"], "30.00",
        "{ctx}: through the crosswalk"
    );
}

/// The panel: the runs page, an upload (recognised as a duplicate), a
/// viewer refused, the run's page with its classes and rejects, its rows as
/// CSV, the JSON API, and the remaining proposal applied by an admin.
async fn panel(t: &TestApp, ctx: &str, run_id: &str, statement: &str) {
    operator(t, "admin@recarga.test", "admin").await;
    operator(t, "viewer@recarga.test", "viewer").await;
    let mut viewer = Browser::new(&t.base);
    viewer.login("viewer@recarga.test", PASSWORD).await;
    let mut admin = Browser::new(&t.base);
    admin.login("admin@recarga.test", PASSWORD).await;

    let list = admin.get("/admin/reconciliations").await;
    assert_eq!(list.status, 200, "{ctx}: {}", list.text);
    assert!(
        list.text.contains(run_id) && list.text.contains("reconcile-upload"),
        "{ctx}"
    );
    let csrf = list
        .text
        .split("data-csrf=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf")
        .to_string();
    let upload = |b: &Browser, csrf: &str, body: &str| {
        b.request(
            reqwest::Method::POST,
            "/admin/reconciliations/upload?source=latcom&file=again.csv",
        )
        .header("x-csrf-token", csrf)
        .header("content-type", "text/csv")
        .body(body.to_string())
        .send()
    };
    let viewer_csrf = viewer
        .get("/admin/reconciliations")
        .await
        .text
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string();
    let refused = upload(&viewer, &viewer_csrf, statement).await.expect("upload");
    assert_eq!(refused.status(), 403, "{ctx}: a viewer cannot import");
    let stale = upload(&admin, "not-the-token", statement).await.expect("upload");
    assert_eq!(stale.status(), 403, "{ctx}: the CSRF token is checked");
    let dup = upload(&admin, &csrf, statement).await.expect("upload");
    assert_eq!(dup.status(), 200, "{ctx}");
    let dup: Value = dup.json().await.expect("json");
    assert_eq!(
        (dup["duplicate"].as_bool(), dup["run_id"].as_str()),
        (Some(true), Some(run_id)),
        "{ctx}"
    );
    let one_sided = admin
        .request(
            reqwest::Method::POST,
            "/admin/reconciliations/upload?source=latcom&from=2026-01-01",
        )
        .header("x-csrf-token", &csrf)
        .body("x")
        .send()
        .await
        .expect("upload");
    assert_eq!(one_sided.status(), 422, "{ctx}: a coverage has both ends");
    let bad = upload(&admin, &csrf, "nothing,useful\n1,2\n").await.expect("upload");
    assert_eq!(bad.status(), 422, "{ctx}");
    let bad: Value = bad.json().await.expect("json");
    assert!(
        bad["message"].as_str().unwrap_or("").contains("DATETIME"),
        "{ctx}: {bad}"
    );

    let page = admin.get(&format!("/admin/reconciliations/{run_id}")).await;
    assert_eq!(page.status, 200, "{ctx}");
    for needle in [
        "class-delivered_but_failed",
        "scientific notation",
        "id=\"apply-form\"",
        "absent from the provider",
    ] {
        assert!(page.text.contains(needle), "{ctx}: {needle} missing from the run page");
    }
    let filtered = admin
        .get(&format!("/admin/reconciliations/{run_id}?class=unknown_to_us"))
        .await;
    assert!(
        filtered.text.contains("LT99999999") && !filtered.text.contains("phone_amount_window"),
        "{ctx}"
    );
    let csv = admin
        .get(&format!(
            "/admin/reconciliations/{run_id}/rows.csv?class=amount_differs"
        ))
        .await;
    assert_eq!(csv.status, 200, "{ctx}");
    assert_eq!(csv.text.lines().count(), 2, "{ctx}: header + the one row: {}", csv.text);

    let api = t
        .http
        .get(format!("{}/api/admin/reconciliations/{run_id}?class=matched", t.base))
        .header("x-admin-key", t.app.admin_key.as_str())
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 200, "{ctx}");
    let api: Value = api.json().await.expect("json");
    assert_eq!(api["run"]["classes"]["matched"], 6, "{ctx}");
    assert_eq!(api["rows"].as_array().map(Vec::len), Some(6), "{ctx}");
    for bad in ["limit=9223372036854775808", "limit=0", "after=x", "sort=id"] {
        let refused = t
            .http
            .get(format!("{}/api/admin/reconciliations/{run_id}?{bad}", t.base))
            .header("x-admin-key", t.app.admin_key.as_str())
            .send()
            .await
            .expect("api");
        assert_eq!(refused.status(), 422, "{ctx}: {bad}");
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["code"], "invalid_query", "{ctx}: {bad}: {body}");
    }
    let anonymous = t
        .http
        .get(format!("{}/api/admin/reconciliations", t.base))
        .send()
        .await
        .expect("api");
    assert_eq!(anonymous.status(), 401, "{ctx}");

    let form_csrf = page.csrf();
    let no_reason = admin
        .post(
            &format!("/admin/reconciliations/{run_id}/apply"),
            &[("csrf", &form_csrf), ("reason", "")],
        )
        .await;
    assert_eq!(no_reason.status, 422, "{ctx}");
    let applied = admin
        .post(
            &format!("/admin/reconciliations/{run_id}/apply"),
            &[("csrf", &form_csrf), ("reason", "March statement, the rest")],
        )
        .await;
    assert_eq!(applied.status, 303, "{ctx}: {}", applied.text);
    let zip = admin.get(&format!("/admin/reconciliations/{run_id}/pack.zip")).await;
    assert_eq!(zip.status, 200, "{ctx}: the panel's dispute pack");
    let after = admin.get(&format!("/admin/reconciliations/{run_id}")).await;
    assert_eq!(after.text.matches("applied by").count(), 3, "{ctx}");
}

/// The customer's statement of today: opening + movements = closing, the
/// closing balance is the balance, and every ledger entry is a movement.
async fn statement(t: &TestApp, ctx: &str, key: &str) {
    let today = recarga_domain::reconcile::business_day(recarga_store::now_ms() + 6 * 3_600_000);
    let (status, s) = t.get(key, &format!("/v1/statements?from={today}&to={today}")).await;
    assert_eq!(status, 200, "{ctx}: {s}");
    assert_eq!(s["ties_out"], true, "{ctx}: {s:#}");
    assert_eq!(s["opening_balance"], "0.00", "{ctx}: the customer was created today");
    assert_eq!(
        s["closing_balance"],
        t.balance("REC_1").await.to_decimal_string(),
        "{ctx}"
    );
    let movements = s["movements"].as_array().expect("movements");
    let sum: i64 = movements
        .iter()
        .map(|m| {
            Money::parse_decimal(m["amount"].as_str().expect("amount"))
                .expect("money")
                .0
        })
        .sum();
    assert_eq!(Money(sum).to_decimal_string(), s["closing_balance"], "{ctx}");
    assert_eq!(movements[0]["kind"], "credit", "{ctx}: the opening credit");
    assert!(
        movements
            .iter()
            .any(|m| m["kind"] == "debit" && m["topup_id"] == "RLR1742324000456"),
        "{ctx}"
    );
    let csv = t
        .http
        .get(format!("{}/v1/statements?from={today}&to={today}&format=csv", t.base))
        .bearer_auth(key)
        .send()
        .await
        .expect("csv");
    assert_eq!(csv.status(), 200, "{ctx}");
    let text = csv.text().await.expect("text");
    assert_eq!(text.lines().count(), movements.len() + 1, "{ctx}: {text}");
    let yesterday = today.pred_opt().expect("a day before");
    let (_, before) = t
        .get(key, &format!("/v1/statements?from={yesterday}&to={yesterday}"))
        .await;
    assert_eq!(
        (
            before["opening_balance"].as_str(),
            before["movements"].as_array().map(Vec::len)
        ),
        (Some("0.00"), Some(0)),
        "{ctx}"
    );
    let (status, _) = t.get(key, "/v1/statements?from=2020-01-01&to=2026-01-01").await;
    assert_eq!(status, 422, "{ctx}: at most 366 days");

    // The same on the customer's dashboard.
    let mut customer = Browser::new(&t.base);
    customer.dashboard_login("REC_1", key).await;
    let page = customer
        .get(&format!("/dashboard/statement?from={today}&to={today}"))
        .await;
    assert_eq!(page.status, 200, "{ctx}: {}", page.text);
    let closing = s["closing_balance"].as_str().expect("closing");
    assert!(
        page.text
            .contains(&format!("id=\"closing\" class=\"value num\">{closing}<")),
        "{ctx}"
    );
    assert!(page.text.contains("yes, to the centavo"), "{ctx}");
    let csv = customer
        .get(&format!("/dashboard/statement.csv?from={today}&to={today}"))
        .await;
    assert_eq!(csv.text.lines().count(), movements.len() + 1, "{ctx}");
}

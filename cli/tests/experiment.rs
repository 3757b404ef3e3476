//! The `experiment` binary: evaluate from a counts file, a warehouse query and a saved
//! state; the JSON contract; reproducibility; update; simulate; plots; bad input.

use std::process::{Command, Output};

use redshift_upsert::sqlx::{self, Connection};

fn experiment(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_experiment"));
    for (k, _) in std::env::vars() {
        if k.starts_with("EXPERIMENT_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn").args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

const COUNTS: &str = "arm,successes,trials,control\nold page,40,1000,true\nnew page,62,1000,\n";

#[test]
fn evaluate_prints_arms_value_remaining_and_a_decision() {
    let dir = tempfile::tempdir().unwrap();
    let counts = dir.path().join("c.csv");
    std::fs::write(&counts, COUNTS).unwrap();
    let c = counts.to_str().unwrap();
    let base = [
        "evaluate",
        "--counts",
        c,
        "--started",
        "2026-11-01",
        "--draws",
        "20000",
    ];
    let json = |today: &str, seed: &str| {
        let mut args = base.to_vec();
        args.extend(["--today", today, "--seed", seed, "--format", "json"]);
        let o = experiment(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        (
            stdout(&o),
            serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap(),
        )
    };
    let (text, v) = json("2026-11-30", "7");
    // The contract: arms with arm, successes, trials, p_best, weight; decision with stop, reason.
    let arms = v["arms"].as_array().unwrap();
    assert_eq!(arms[1]["arm"], "new page");
    assert_eq!(arms[1]["successes"], 62.0);
    assert_eq!(arms[1]["trials"], 1000.0);
    let (p0, p1) = (
        arms[0]["p_best"].as_f64().unwrap(),
        arms[1]["p_best"].as_f64().unwrap(),
    );
    assert!((p0 + p1 - 1.0).abs() < 1e-9 && p1 > 0.95, "{p0} {p1}");
    let w: f64 = arms.iter().map(|a| a["weight"].as_f64().unwrap()).sum();
    assert!((w - 1.0).abs() < 1e-9);
    assert!(arms[1]["p_beats_control"].as_f64().unwrap() > 0.95);
    assert_eq!(v["decision"]["stop"], true);
    assert!(
        v["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("P(beats control) of new page")
    );
    // The same seed, the same output; another seed, other draws.
    assert_eq!(json("2026-11-30", "7").0, text);
    assert_ne!(json("2026-11-30", "8").0, text);
    // Too early: 5 days of the minimum 14.
    let (_, early) = json("2026-11-06", "7");
    assert_eq!(early["decision"]["stop"], false);
    assert!(
        early["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("minimum 14 days")
    );

    let mut args = base.to_vec();
    args.extend(["--today", "2026-11-30", "--plot"]);
    let svg = dir.path().join("posteriors.svg");
    args.push(svg.to_str().unwrap());
    let o = experiment(&args);
    let table = stdout(&o);
    assert!(
        table.contains("old page (control)") && table.contains("decision: stop"),
        "{table}"
    );
    assert!(
        table.contains("value remaining (95th percentile)"),
        "{table}"
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("<svg") && picture.contains("new page"));
}

#[tokio::test]
async fn counts_from_a_warehouse_and_a_state_updated_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE visits (variant TEXT, converted INTEGER);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 2000)
         INSERT INTO visits SELECT CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END,
           CASE WHEN i % 2 = 0 THEN (i % 50 = 0) ELSE (i % 19 = 1) END FROM n;",
    )
    .execute(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    let url = format!("sqlite://{}", db.display());
    let sql =
        "SELECT variant, SUM(converted), COUNT(*) FROM visits GROUP BY variant ORDER BY variant";
    let o = experiment(&[
        "evaluate",
        "--warehouse",
        &url,
        "--sql",
        sql,
        "--started",
        "2026-10-01",
        "--today",
        "2026-11-30",
        "--format",
        "json",
        "--draws",
        "10000",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["arms"][0]["arm"], "a");
    assert_eq!(v["arms"][0]["trials"], 1000.0);
    assert_eq!(v["arms"][0]["successes"], 40.0);
    assert_eq!(v["arms"][1]["successes"], 53.0);

    // A state built from two batches, the second discounted history.
    let state = dir.path().join("state.json");
    let batch = dir.path().join("b.csv");
    std::fs::write(&batch, "a,10,500\nb,20,500\n").unwrap();
    let s = state.to_str().unwrap();
    let b = batch.to_str().unwrap();
    let o = experiment(&[
        "update",
        "--state",
        s,
        "--counts",
        b,
        "--started",
        "2026-11-01",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = experiment(&["update", "--state", s, "--counts", b, "--discount", "0.5"]);
    assert!(stdout(&o).contains("2 batches"), "{}", stdout(&o));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        saved["arms"][0]["trials"], 1000.0,
        "the discount applies from the next batch"
    );
    let o = experiment(&["update", "--state", s, "--counts", b]);
    assert_eq!(o.status.code(), Some(0));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(saved["arms"][0]["trials"], 1000.0, "half of 1000, plus 500");
    let o = experiment(&[
        "evaluate",
        "--state",
        s,
        "--today",
        "2026-11-30",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["age_days"], 29.0);
    assert_eq!(v["arms"][1]["successes"], 40.0);
}

#[test]
fn simulate_reports_both_designs_and_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("sim.svg");
    let o = experiment(&[
        "simulate",
        "--rates",
        "0.04,0.08",
        "--visits-per-day",
        "200",
        "--horizon-days",
        "60",
        "--runs",
        "6",
        "--draws",
        "200",
        "--format",
        "json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["classical_days"].as_u64().unwrap() > 0);
    assert_eq!(v["bandit"]["daily_share"].as_array().unwrap().len(), 60);
    assert!(
        v["bandit"]["lost_during"]["median"].as_f64().unwrap()
            < v["classical"]["lost_during"]["median"].as_f64().unwrap()
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("<svg") && picture.contains("fixed horizon"));
}

#[test]
fn bad_input_names_the_line_and_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let counts = dir.path().join("c.csv");
    std::fs::write(&counts, "a,5,10\nb,12,10\n").unwrap();
    let o = experiment(&[
        "evaluate",
        "--counts",
        counts.to_str().unwrap(),
        "--started",
        "2026-11-01",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("c.csv line 2") && err.contains("12 successes out of 10"),
        "{err}"
    );
    let o = experiment(&[
        "evaluate",
        "--counts",
        counts.to_str().unwrap(),
        "--format",
        "xml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    std::fs::write(&counts, COUNTS).unwrap();
    let o = experiment(&["evaluate", "--counts", counts.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--started"));
}

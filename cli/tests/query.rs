//! The `query` binary against SQLite (always) and PostgreSQL (`TEST_POSTGRES_URL`): the same
//! awkward values render identically in every format (golden files under
//! `tests/data/query/`; `UPDATE_GOLDEN=1` rewrites them from SQLite), `tables`/`describe`,
//! errors mid-script, usage errors, `--var`, `--max-rows`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use redshift_upsert::sqlx::{self, Connection};

/// The fixture: every awkward value, the same SQL for both databases.
const FIXTURE: &str = "CREATE TABLE awkward (id BIGINT, name TEXT, note TEXT, amount DOUBLE PRECISION, at TIMESTAMP);
INSERT INTO awkward VALUES (1, 'plain', 'hello', 1.5, '2026-11-30 12:34:56');
INSERT INTO awkward VALUES (2, '', NULL, -0.25, NULL);
INSERT INTO awkward VALUES (3, 'quote \"double\" and ''single''', 'comma, here', 0, '2026-01-01 00:00:00');
INSERT INTO awkward VALUES (4, 'multi
line', 'tab\there', 1000, '2026-02-28 23:59:59');
INSERT INTO awkward VALUES (9223372036854775807, 'unicode é☃ 日本', 'pipe | and backslash \\', 123456.75, '1999-12-31 23:59:59');
INSERT INTO awkward VALUES (6, NULL, NULL, NULL, NULL);";

const SELECT: &str = "SELECT id, name, note, amount, at FROM awkward ORDER BY id";

fn query() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_query"));
    for (k, _) in std::env::vars() {
        if k.starts_with("QUERY_") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn");
    c
}

fn run(warehouse: &str, args: &[&str]) -> Output {
    query()
        .arg("--warehouse")
        .arg(warehouse)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn sqlite_warehouse(dir: &Path) -> String {
    let db = dir.join("w.db");
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(FIXTURE))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    format!("sqlite://{}", db.display())
}

async fn postgres_warehouse(test: &str) -> Option<test_services::postgres::ScratchSchema> {
    let server = test_services::service_url(test_services::POSTGRES, test)?;
    let schema = test_services::postgres::ScratchSchema::create(&server, "query_").await;
    let mut c = sqlx::PgConnection::connect(&schema.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(FIXTURE))
        .execute(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    Some(schema)
}

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/query")
        .join(name)
}

const FORMATS: [(&str, &str); 5] = [
    ("csv", "awkward.csv"),
    ("json", "awkward.json"),
    ("jsonl", "awkward.jsonl"),
    ("markdown", "awkward.md"),
    ("table", "awkward.table"),
];

#[tokio::test]
async fn every_format_renders_the_same_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite_warehouse(dir.path()).await;
    let pg = postgres_warehouse("query_formats").await;
    for (format, file) in FORMATS {
        let o = run(&lite, &["--format", format, "-c", SELECT]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let got = stdout(&o);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(golden(file), &got).unwrap();
        }
        let want = std::fs::read_to_string(golden(file)).unwrap();
        assert_eq!(got, want, "SQLite, --format {format}");
        if let Some(pg) = &pg {
            let o = run(&pg.url, &["--format", format, "-c", SELECT]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert_eq!(stdout(&o), want, "PostgreSQL, --format {format}");
        }
    }
    // JSON keeps types: numbers are numbers (the largest bigint exactly), NULL is null.
    let o = run(&lite, &["--format", "json", "-c", SELECT]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["amount"], serde_json::json!(1.5));
    assert_eq!(v[1]["note"], serde_json::Value::Null);
    assert_eq!(v[1]["name"], "");
    assert!(stdout(&o).contains("\"id\":9223372036854775807"));
    // A NULL string for CSV; an empty string stays apart from it either way.
    let o = run(
        &lite,
        &[
            "--null",
            "NULL",
            "--no-header",
            "-c",
            "SELECT name, note FROM awkward WHERE id IN (2, 6) ORDER BY id",
        ],
    );
    assert_eq!(stdout(&o), ",NULL\r\nNULL,NULL\r\n");
}

#[tokio::test]
async fn an_empty_result_prints_its_header_and_statements_without_rows_print_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite_warehouse(dir.path()).await;
    let pg = postgres_warehouse("query_empty").await;
    let mut urls = vec![lite];
    urls.extend(pg.as_ref().map(|s| s.url.clone()));
    for url in &urls {
        let o = run(
            url,
            &[
                "-c",
                "UPDATE awkward SET note = 'x' WHERE id = 1; SELECT id, name FROM awkward WHERE id < 0",
            ],
        );
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(stdout(&o), "id,name\r\n", "{url}");
        let o = run(
            url,
            &[
                "--format",
                "json",
                "-c",
                "SELECT id FROM awkward WHERE id < 0",
            ],
        );
        assert_eq!(stdout(&o), "[]\n");
    }
}

#[tokio::test]
async fn tables_and_describe() {
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite_warehouse(dir.path()).await;
    let o = run(&lite, &["tables"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "schema,name,type\r\nmain,awkward,table\r\n");
    let o = run(&lite, &["describe", "awkward"]);
    assert_eq!(
        stdout(&o),
        "column,type,nullable\r\nid,BIGINT,yes\r\nname,TEXT,yes\r\nnote,TEXT,yes\r\namount,DOUBLE PRECISION,yes\r\nat,TIMESTAMP,yes\r\n"
    );
    let o = run(&lite, &["describe", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).is_empty());
    assert!(stderr(&o).contains("no table nope"), "{}", stderr(&o));

    let Some(pg) = postgres_warehouse("query_meta").await else {
        return;
    };
    let o = run(&pg.url, &["tables", "--schema", &pg.name]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("schema,name,type\r\n{},awkward,table\r\n", pg.name)
    );
    let o = run(&pg.url, &["describe", "awkward"]);
    assert_eq!(
        stdout(&o),
        "column,type,nullable\r\nid,bigint,yes\r\nname,text,yes\r\nnote,text,yes\r\namount,double precision,yes\r\nat,timestamp without time zone,yes\r\n"
    );
    let o = run(&pg.url, &["describe", &format!("{}.awkward", pg.name)]);
    assert!(
        stdout(&o).contains("amount,double precision,yes"),
        "{}",
        stdout(&o)
    );
}

#[tokio::test]
async fn the_first_error_stops_the_script_and_prints_nothing_of_its_statement() {
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite_warehouse(dir.path()).await;
    let o = run(
        &lite,
        &["-c", "SELECT 1 AS a;\n  SELECT * FROM nope; SELECT 2 AS b"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "a\r\n1\r\n");
    let err = stderr(&o);
    assert!(
        err.contains("-c #1:2:3:") && err.contains("no such table: nope"),
        "{err}"
    );

    let Some(pg) = postgres_warehouse("query_errors").await else {
        return;
    };
    // Rows came before the error: none of them is printed.
    let o = run(
        &pg.url,
        &[
            "-c",
            "SELECT 7 AS a; SELECT 10 / (3 - g) AS q FROM generate_series(1, 5) g; SELECT 8",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "a\r\n7\r\n");
    let err = stderr(&o);
    assert!(
        err.contains("-c #1:1:16:") && err.contains("division by zero") && err.contains("22012"),
        "{err}"
    );
    let o = run(&pg.url, &["-c", "SELECT nosuchcolumn FROM awkward"]);
    assert!(
        stderr(&o).contains("at character 8 of the statement"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let o = query().args(["-c", "SELECT 1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--warehouse"), "{}", stderr(&o));
    let o = query()
        .args(["--warehouse", "mysql://x", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = query()
        .args(["--warehouse", "sqlite:///tmp/x.db", "--var", "no-equals"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = query().args(["--format", "xml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let o = run(
        &format!("sqlite://{}", missing.display()),
        &["-c", "SELECT 1"],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a missing SQLite file is an error"
    );
    assert!(!missing.exists(), "query never creates a database");
}

#[tokio::test]
async fn variables_rows_cut_timing_files_stdin_and_database_url() {
    let dir = tempfile::tempdir().unwrap();
    let lite = sqlite_warehouse(dir.path()).await;
    let o = run(
        &lite,
        &[
            "--var",
            "v=it's",
            "--var",
            "col=x y",
            "-c",
            "SELECT :v AS v, :\"col\" FROM (SELECT 1 AS \"x y\") t",
        ],
    );
    assert_eq!(stdout(&o), "v,x y\r\nit's,1\r\n", "{}", stderr(&o));
    let o = run(&lite, &["--max-rows", "2", "--timing", "-c", SELECT]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().count(), 3, "the header and 2 rows");
    let err = stderr(&o);
    assert!(
        err.contains("output cut at 2 rows") && err.contains("Time: "),
        "{err}"
    );
    let script = dir.path().join("s.sql");
    std::fs::write(&script, "SELECT 1 AS one;\nSELECT 2 AS two;\n").unwrap();
    let o = run(
        &lite,
        &["-c", "SELECT 0 AS zero", "-f", script.to_str().unwrap()],
    );
    assert_eq!(stdout(&o), "zero\r\n0\r\none\r\n1\r\ntwo\r\n2\r\n");
    let mut child = query()
        .env("DATABASE_URL", &lite)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"SELECT count(*) AS n FROM awkward",
    )
    .unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "n\r\n6\r\n");
    let o = query()
        .env("QUERY_WAREHOUSE", &lite)
        .env("DATABASE_URL", "postgres://nowhere.invalid/x")
        .args(["-c", "SELECT 5 AS five"])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "five\r\n5\r\n",
        "QUERY_WAREHOUSE before DATABASE_URL"
    );
}

//! The loader conformance suite: every test body is written once, as an `async fn` over a
//! [`Backend`], and runs against SQLite (always) and PostgreSQL (`TEST_POSTGRES_URL`; skipped
//! when unset unless `REQUIRE_SERVICES=1`): `sqlite::NAME` and `postgres::NAME`.
//!
//! Batches are built directly (a store over a temporary directory, a parsed manifest, the
//! files as the store lists them), not through the `blueshift` service. The PostgreSQL fast
//! paths are forced on and off with [`FastPaths`]; each test asserts the rows are the same
//! either way and, with [`LoadReport::path`], that the path was (not) taken.

#[macro_use]
#[path = "conformance/backend.rs"]
mod backend;

use backend::{Backend, Kind, Rows, s};
use redshift_upsert::{Error, FastPaths, LoadOptions, LoadPath};

conformance!(
    merge_replaces_matching_rows_and_inserts_new_ones,
    append_keeps_existing_keys,
    replace_empties_the_table_then_loads,
    in_batch_dedupe_the_last_row_per_key_in_load_order_wins,
    in_batch_dedupe_the_greatest_order_column_wins,
    a_failing_file_rolls_back_everything_and_keeps_the_files,
    a_crash_after_commit_before_delete_loads_nothing_twice,
    direct_copy_into_an_empty_table_on_and_off,
    keys_first_on_and_off,
    unique_keys_dedupe_skip_on_and_off,
);

/// The README's manifest (tab-separated with a header, escapes, trailing blanks trimmed).
fn tsv_manifest(table: &str, extra: &str) -> String {
    format!(
        r#"{{:table "{table}" :pk-columns ["id"] :columns ["id" "v"]
 :options ["DELIMITER '\\t'" "IGNOREHEADER 1" "ESCAPE" "TRIMBLANKS"] :data-pattern ".*tsv$" {extra}}}"#
    )
}

const STAGED: LoadPath = LoadPath::Staged {
    dedupe_skipped: false,
};
const STAGED_UNIQUE: LoadPath = LoadPath::Staged {
    dedupe_skipped: true,
};

async fn merge_replaces_matching_rows_and_inserts_new_ones(b: &mut Backend) {
    let t = b.table("rsu_merge_", "id BIGINT, v TEXT").await;
    b.exec(&format!("INSERT INTO {t} VALUES (1, 'one'), (2, 'two')"))
        .await;
    b.write("in/a.tsv", b"id\tv\n2\tTWO  \n3\tthree\n");
    b.write("in/b.tsv", b"id\tv\n4\t\\N\n5\ttab\\\there\n");
    // More rows than one SQLite insert statement holds.
    let mut big = b"id\tv\n".to_vec();
    for i in 10..1010 {
        big.extend_from_slice(format!("{i}\tv{i}\n").as_bytes());
    }
    b.write("in/c.tsv", &big);
    b.write("in/ignored.csv", b"x");
    let batch = b.batch("in", "manifest.edn", &tsv_manifest(&t, "")).await;
    assert_eq!(batch.files.len(), 3);
    let loader = b.loader(FastPaths::ALL);
    let rep = b.load(&loader, &batch).await.unwrap();
    assert_eq!(
        (
            rep.files_loaded,
            rep.files_skipped,
            rep.rows,
            rep.files_deleted
        ),
        (3, 0, 1004, 3)
    );
    assert_eq!(rep.table, t);
    assert_eq!(rep.path, b.path(LoadPath::KeysFirst));
    let rows = b.rows(&t).await;
    assert_eq!(
        rows[..5],
        [
            (1, s("one")),
            (2, s("TWO")),
            (3, s("three")),
            (4, None),
            (5, s("tab\there"))
        ]
    );
    assert_eq!(rows.len(), 5 + 1000);
    assert_eq!(
        rows[5..],
        (10..1010)
            .map(|i| (i, s(&format!("v{i}"))))
            .collect::<Rows>()[..]
    );
    // The loaded files are deleted; the manifest and files the pattern leaves out stay.
    assert_eq!(b.files_in("in"), vec!["ignored.csv", "manifest.edn"]);
    assert_eq!(b.history_rows("loaded").await, 3);
    assert_eq!(b.history_rows("failed").await, 0);
}

async fn append_keeps_existing_keys(b: &mut Backend) {
    let t = b.table("rsu_append_", "id BIGINT, v TEXT").await;
    b.exec(&format!("INSERT INTO {t} VALUES (1, 'one'), (2, 'two')"))
        .await;
    b.write(
        "ap/a.json.zst",
        &zstd::encode_all(
            &b"{\"id\": 2, \"v\": \"ignored\"}\n{\"id\": 3, \"v\": \"three\"}\n{\"id\": 3, \"v\": \"THREE\"}\n"[..],
            1,
        )
        .unwrap(),
    );
    let manifest = format!(
        "table = \"{t}\"\npk-columns = [\"id\"]\ncolumns = [\"id\", \"v\"]\noptions = [\"JSON 'auto'\", \"ZSTD\"]\ndata-pattern = \".*\\\\.json\\\\.zst\"\nstrategy = \"append\"\n"
    );
    let batch = b.batch("ap", "manifest.toml", &manifest).await;
    let loader = b.loader(FastPaths::ALL);
    let rep = b.load(&loader, &batch).await.unwrap();
    assert_eq!((rep.files_loaded, rep.rows), (1, 3));
    // Key 3 repeats within the batch: the dedupe step runs.
    assert_eq!(rep.path, b.path(STAGED));
    assert_eq!(
        b.rows(&t).await,
        vec![(1, s("one")), (2, s("two")), (3, s("THREE"))]
    );
}

async fn replace_empties_the_table_then_loads(b: &mut Backend) {
    let t = b.table("rsu_replace_", "id BIGINT, v TEXT").await;
    b.exec(&format!(
        "INSERT INTO {t} VALUES (1, 'one'), (7, 'old seven')"
    ))
    .await;
    b.write("rp/a.txt", b"7|seven\n8|eight\n");
    b.write("rp/b.txt", b"7|SEVEN\n");
    let manifest = format!(
        r#"{{"table": "{t}", "pk-columns": ["id"], "columns": ["id", "v"], "options": ["DELIMITER '|'"], "data-pattern": ".*\\.txt", "strategy": "replace"}}"#
    );
    let batch = b.batch("rp", "manifest.json", &manifest).await;
    let loader = b.loader(FastPaths::ALL);
    let rep = b.load(&loader, &batch).await.unwrap();
    assert_eq!((rep.files_loaded, rep.rows), (2, 3));
    assert_eq!(rep.path, b.path(STAGED));
    assert_eq!(b.rows(&t).await, vec![(7, s("SEVEN")), (8, s("eight"))]);
}

async fn in_batch_dedupe_the_last_row_per_key_in_load_order_wins(b: &mut Backend) {
    let t = b.table("rsu_dedupe_", "id BIGINT, v TEXT").await;
    b.exec(&format!("INSERT INTO {t} VALUES (1, 'one')")).await;
    // Files load in key order: a.tsv, then b.tsv.
    b.write("d/a.tsv", b"id\tv\n2\ta\n3\tb\n2\tc\n");
    b.write("d/b.tsv", b"id\tv\n3\td\n4\te\n");
    let batch = b.batch("d", "manifest.edn", &tsv_manifest(&t, "")).await;
    let loader = b.loader(FastPaths::ALL);
    let rep = b.load(&loader, &batch).await.unwrap();
    assert_eq!(rep.rows, 5);
    assert_eq!(rep.path, b.path(STAGED));
    assert_eq!(
        b.rows(&t).await,
        vec![(1, s("one")), (2, s("c")), (3, s("d")), (4, s("e"))]
    );
}

async fn in_batch_dedupe_the_greatest_order_column_wins(b: &mut Backend) {
    let t = b.table("rsu_order_", "id BIGINT, v TEXT, ts BIGINT").await;
    b.exec(&format!("INSERT INTO {t} VALUES (1, 'old', 0)"))
        .await;
    let data = b"2,late,9\n2,early,1\n1,\"new, quoted\",5\n3,has-ts,2\n3,null-ts,\n";
    b.write("o/a.csv.gz", &gzip(data));
    let manifest = format!(
        r#"{{:table "{t}" :pk-columns ["id"] :columns ["id" "v" "ts"] :options ["CSV" "GZIP" "EMPTYASNULL"] :data-pattern ".*\\.csv\\.gz" :dedupe-order-column "ts"}}"#
    );
    let batch = b.batch("o", "manifest.edn", &manifest).await;
    let loader = b.loader(FastPaths::ALL);
    let rep = b.load(&loader, &batch).await.unwrap();
    assert_eq!(rep.rows, 5);
    assert_eq!(rep.path, b.path(STAGED));
    // Whatever the load order: the greatest `ts` wins, a NULL `ts` loses to any value.
    assert_eq!(
        b.rows(&t).await,
        vec![(1, s("new, quoted")), (2, s("late")), (3, s("has-ts"))]
    );
}

async fn a_failing_file_rolls_back_everything_and_keeps_the_files(b: &mut Backend) {
    let t = b.table("rsu_bad_", "id BIGINT, v TEXT NOT NULL").await;
    b.exec(&format!("INSERT INTO {t} VALUES (1, 'one')")).await;
    b.write("in/a.tsv", b"id\tv\n1\tchanged\n2\ttwo\n");
    // The second file's record 3 has one field where the manifest has two columns.
    b.write("in/b.tsv", b"id\tv\n3\tthree\n4\n");
    let batch = b.batch("in", "manifest.edn", &tsv_manifest(&t, "")).await;
    let loader = b.loader(FastPaths::ALL);
    let e = b.load(&loader, &batch).await.unwrap_err();
    match &e {
        Error::Data { file, record, .. } => assert_eq!((file.as_str(), *record), ("in/b.tsv", 3)),
        other => panic!("{other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("in/b.tsv") && msg.contains("record 3"),
        "{msg}"
    );
    assert_eq!(b.rows(&t).await, vec![(1, s("one"))]);
    assert_eq!(b.files_in("in"), vec!["a.tsv", "b.tsv", "manifest.edn"]);
    assert_eq!(b.history_rows("loaded").await, 0);
    assert_eq!(b.history_rows("failed").await, 2);

    // A value the table refuses (NULL in a NOT NULL column) rolls back the same way; the
    // error names the table.
    b.write("in/b.tsv", b"id\tv\n3\t\\N\n");
    let batch = b.batch("in", "manifest.edn", &tsv_manifest(&t, "")).await;
    let e = b.load(&loader, &batch).await.unwrap_err();
    match &e {
        Error::Database { table, .. } => assert_eq!(table, &t),
        other => panic!("{other:?}"),
    }
    assert!(!e.is_retryable());
    assert_eq!(b.rows(&t).await, vec![(1, s("one"))]);
    assert_eq!(b.files_in("in"), vec!["a.tsv", "b.tsv", "manifest.edn"]);
    assert_eq!(b.history_rows("loaded").await, 0);
    assert_eq!(b.history_rows("failed").await, 4);
}

async fn a_crash_after_commit_before_delete_loads_nothing_twice(b: &mut Backend) {
    let t = b.table("rsu_crash_", "id BIGINT, v TEXT").await;
    b.exec(&format!("INSERT INTO {t} VALUES (1, 'one')")).await;
    b.write("in/a.tsv", b"id\tv\n1\tuno\n2\ttwo\n");
    let batch = b.batch("in", "manifest.edn", &tsv_manifest(&t, "")).await;
    // The first process commits, then "dies" before deleting the files.
    let first = b.loader_with(LoadOptions {
        delete_loaded: false,
        ..LoadOptions::default()
    });
    let rep = b.load(&first, &batch).await.unwrap();
    assert_eq!((rep.files_loaded, rep.files_deleted, rep.rows), (1, 0, 2));
    let want = vec![(1, s("uno")), (2, s("two"))];
    assert_eq!(b.rows(&t).await, want);
    let stored = b.row_ids(&t).await;
    assert_eq!(b.files_in("in"), vec!["a.tsv", "manifest.edn"]);
    // The next process finds the file in the history: skipped, deleted, nothing reloaded.
    let next = b.loader(FastPaths::ALL);
    let batch = b.batch("in", "manifest.edn", &tsv_manifest(&t, "")).await;
    let rep = b.load(&next, &batch).await.unwrap();
    assert_eq!(
        (
            rep.files_loaded,
            rep.files_skipped,
            rep.files_deleted,
            rep.rows
        ),
        (0, 1, 1, 0)
    );
    assert_eq!(rep.path, None);
    assert_eq!(b.rows(&t).await, want);
    assert_eq!(b.row_ids(&t).await, stored, "rows were loaded again");
    assert_eq!(b.history_rows("loaded").await, 1);
    assert_eq!(b.files_in("in"), vec!["manifest.edn"]);
    // A new file under the same key is new data: loaded.
    b.write("in/a.tsv", b"id\tv\n2\tdos\n");
    let batch = b.batch("in", "manifest.edn", &tsv_manifest(&t, "")).await;
    let rep = b.load(&next, &batch).await.unwrap();
    assert_eq!((rep.files_loaded, rep.files_skipped), (1, 0));
    assert_eq!(b.rows(&t).await, vec![(1, s("uno")), (2, s("dos"))]);
    assert_eq!(b.history_rows("loaded").await, 2);
}

/// Loads the files `batch` into a fresh table per fast-path setting (created with `columns`,
/// filled with `initial` rows) and returns the path each load took and the rows it left.
async fn load_each_way(
    b: &mut Backend,
    columns: &str,
    initial: &str,
    files: &[(&str, &[u8])],
    settings: &[FastPaths],
) -> Vec<(Option<LoadPath>, Rows)> {
    let mut out = Vec::new();
    for (i, fast) in settings.iter().enumerate() {
        let t = b.table("rsu_fast_", columns).await;
        if !initial.is_empty() {
            b.exec(&format!("INSERT INTO {t} VALUES {initial}")).await;
        }
        let dir = format!("{t}/{i}");
        for (name, data) in files {
            b.write(&format!("{dir}/{name}"), data);
        }
        let batch = b.batch(&dir, "manifest.edn", &tsv_manifest(&t, "")).await;
        let loader = b.loader(*fast);
        let rep = b.load(&loader, &batch).await.unwrap();
        out.push((rep.path, b.rows(&t).await));
    }
    out
}

const DIRECT_OFF: FastPaths = FastPaths {
    direct_into_empty: false,
    ..FastPaths::ALL
};
const KEYS_FIRST_OFF: FastPaths = FastPaths {
    keys_first: false,
    ..FastPaths::ALL
};
const DEDUPE_SKIP_OFF: FastPaths = FastPaths {
    skip_unique_dedupe: false,
    ..FastPaths::ALL
};

async fn direct_copy_into_an_empty_table_on_and_off(b: &mut Backend) {
    let pk = "id BIGINT PRIMARY KEY, v TEXT";
    let ways = [FastPaths::ALL, DIRECT_OFF, FastPaths::NONE];
    // Unique keys over two files, with NULL, escapes and blanks.
    let unique: &[(&str, &[u8])] = &[
        ("a.tsv", b"id\tv\n1\tone  \n2\t\\N\n"),
        ("b.tsv", b"id\tv\n3\ttab\\\there\n4\t\n"),
    ];
    let got = load_each_way(b, pk, "", unique, &ways).await;
    let want = vec![(1, s("one")), (2, None), (3, s("tab\there")), (4, s(""))];
    assert_eq!(got[0], (b.path(LoadPath::DirectIntoEmpty), want.clone()));
    assert_eq!(got[1], (b.path(LoadPath::KeysFirst), want.clone()));
    assert_eq!(got[2], (b.path(STAGED), want));

    // A key repeated across files: the direct copy is undone, the latest row wins.
    let repeated: &[(&str, &[u8])] = &[
        ("a.tsv", b"id\tv\n5\tfive\n6\tsix\n"),
        ("b.tsv", b"id\tv\n6\tSIX\n7\tseven\n"),
    ];
    let want = vec![(5, s("five")), (6, s("SIX")), (7, s("seven"))];
    for (path, rows) in load_each_way(b, pk, "", repeated, &ways).await {
        assert_eq!((path, rows), (b.path(STAGED), want.clone()));
    }

    // Keys equal as numbers though not as text: the primary key refuses the direct copy,
    // which is undone; the latest row wins.
    let as_values: &[(&str, &[u8])] = &[("a.tsv", b"id\tv\n8\teight\n08\tEIGHT\n")];
    for (path, rows) in load_each_way(b, pk, "", as_values, &ways).await {
        assert_eq!((path, rows), (b.path(STAGED), vec![(8, s("EIGHT"))]));
    }
    // The documented exception (FastPaths): without a unique index the fast paths compare
    // keys as text and keep both rows; the staged load compares values.
    let got = load_each_way(
        b,
        "id BIGINT, v TEXT",
        "",
        as_values,
        &[FastPaths::ALL, FastPaths::NONE],
    )
    .await;
    match b.kind {
        Kind::Postgres => {
            assert_eq!(
                got[0],
                (
                    Some(LoadPath::DirectIntoEmpty),
                    vec![(8, s("EIGHT")), (8, s("eight"))]
                )
            );
            assert_eq!(got[1], (Some(STAGED), vec![(8, s("EIGHT"))]));
        }
        Kind::Sqlite => {
            for g in got {
                assert_eq!(g, (Some(STAGED), vec![(8, s("EIGHT"))]));
            }
        }
    }
}

async fn keys_first_on_and_off(b: &mut Backend) {
    let ways = [FastPaths::ALL, KEYS_FIRST_OFF, FastPaths::NONE];
    let initial = "(10, 'ten'), (20, 'twenty'), (30, 'thirty')";
    // Batch keys below, inside and above the table's key range, unique.
    let unique: &[(&str, &[u8])] = &[(
        "a.tsv",
        b"id\tv\n5\tfive\n30\tTHIRTY\n25\tquarter\n10\tTEN\n40\tforty\n",
    )];
    let want = vec![
        (5, s("five")),
        (10, s("TEN")),
        (20, s("twenty")),
        (25, s("quarter")),
        (30, s("THIRTY")),
        (40, s("forty")),
    ];
    // With a primary key (probing its index, only keys within its range) and without.
    for columns in ["id BIGINT PRIMARY KEY, v TEXT", "id BIGINT, v TEXT"] {
        let got = load_each_way(b, columns, initial, unique, &ways).await;
        assert_eq!(
            got[0],
            (b.path(LoadPath::KeysFirst), want.clone()),
            "{columns}"
        );
        assert_eq!(got[1], (b.path(STAGED_UNIQUE), want.clone()), "{columns}");
        assert_eq!(got[2], (b.path(STAGED), want.clone()), "{columns}");
    }
    // A repeated key: keys first falls back to the staged load; the latest row wins.
    let repeated: &[(&str, &[u8])] = &[
        ("a.tsv", b"id\tv\n20\tTWENTY\n30\tx\n"),
        ("b.tsv", b"id\tv\n30\tTHIRTY\n"),
    ];
    let want = vec![(10, s("ten")), (20, s("TWENTY")), (30, s("THIRTY"))];
    let got = load_each_way(b, "id BIGINT PRIMARY KEY, v TEXT", initial, repeated, &ways).await;
    for (path, rows) in got {
        assert_eq!((path, rows), (b.path(STAGED), want.clone()));
    }
}

async fn unique_keys_dedupe_skip_on_and_off(b: &mut Backend) {
    // Append has no other fast path: only the dedupe skip differs.
    let t = b.table("rsu_skip_", "id BIGINT PRIMARY KEY, v TEXT").await;
    let u = b.table("rsu_skip_", "id BIGINT PRIMARY KEY, v TEXT").await;
    let mut got = Vec::new();
    for (table, fast) in [(&t, FastPaths::ALL), (&u, DEDUPE_SKIP_OFF)] {
        b.exec(&format!("INSERT INTO {table} VALUES (1, 'one')"))
            .await;
        let loader = b.loader(fast);
        let mut per_batch = Vec::new();
        for (d, data) in [
            ("unique", &b"id\tv\n1\tignored\n2\ttwo\n"[..]),
            ("repeated", &b"id\tv\n3\ta\n3\tb\n"[..]),
        ] {
            let dir = format!("{table}/{d}");
            b.write(&format!("{dir}/a.tsv"), data);
            let batch = b
                .batch(
                    &dir,
                    "manifest.edn",
                    &tsv_manifest(table, ":strategy \"append\""),
                )
                .await;
            let rep = b.load(&loader, &batch).await.unwrap();
            per_batch.push((rep.path, b.rows(table).await));
        }
        got.push(per_batch);
    }
    let after_unique = vec![(1, s("one")), (2, s("two"))];
    let after_repeated = vec![(1, s("one")), (2, s("two")), (3, s("b"))];
    assert_eq!(
        got[0],
        vec![
            (b.path(STAGED_UNIQUE), after_unique.clone()),
            (b.path(STAGED), after_repeated.clone())
        ]
    );
    assert_eq!(
        got[1],
        vec![
            (b.path(STAGED), after_unique),
            (b.path(STAGED), after_repeated)
        ]
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

//! The backends the conformance suite runs every test body against: SQLite (a file in a
//! temporary directory, always) and PostgreSQL (`TEST_POSTGRES_URL`, skipped with one line
//! when unset, a failure when `REQUIRE_SERVICES=1`). Each test gets its own store (a
//! temporary directory) and, on PostgreSQL, a scratch schema of its own (dropped with
//! everything in it at the end), so tests run in parallel.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::local::LocalFileSystem;
use redshift_upsert::sqlx::{self, Connection, PgConnection, Row, SqliteConnection};
use redshift_upsert::{
    Batch, DataFile, FastPaths, LoadOptions, LoadPath, LoadReport, Loader, Manifest,
    ManifestFormat, Store, TableName, WarehouseUrl,
};

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

enum Conn {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

/// Runs `$body` with `$c` bound to the connection, whichever database it is.
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            Conn::Pg($c) => $body,
            Conn::Sqlite($c) => $body,
        }
    };
}

/// One test's warehouse, store and history table.
pub struct Backend {
    pub kind: Kind,
    warehouse: WarehouseUrl,
    root: PathBuf,
    pub store: Store,
    /// The load-history table.
    pub history: String,
    conn: Conn,
    /// PostgreSQL: the test's own schema, dropped with everything in it after the test.
    _schema: Option<test_services::postgres::ScratchSchema>,
    _dir: tempfile::TempDir,
}

/// Rows of `id, v` tables.
pub type Rows = Vec<(i64, Option<String>)>;

pub fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

impl Backend {
    fn store_over(dir: &tempfile::TempDir) -> (PathBuf, Store) {
        let root = dir.path().join("store");
        std::fs::create_dir_all(&root).unwrap();
        let fs = LocalFileSystem::new_with_prefix(&root).unwrap();
        let store = Store::new(Arc::new(fs), "", None, root.display().to_string());
        (root, store)
    }

    /// A SQLite database file in a temporary directory.
    pub async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warehouse.db");
        let conn = SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .unwrap();
        let (root, store) = Self::store_over(&dir);
        Backend {
            kind: Kind::Sqlite,
            warehouse: WarehouseUrl::parse(&format!("sqlite://{}", db.display())).unwrap(),
            root,
            store,
            history: test_services::unique_name("rsu_hist_"),
            conn: Conn::Sqlite(conn),
            _schema: None,
            _dir: dir,
        }
    }

    /// The PostgreSQL of `TEST_POSTGRES_URL`, or `None` (skipped) when it is unset.
    pub async fn postgres(test: &str) -> Option<Backend> {
        let server = test_services::service_url(test_services::POSTGRES, test)?;
        let schema = test_services::postgres::ScratchSchema::create(&server, "rsu_").await;
        let url = schema.url.clone();
        let conn = PgConnection::connect(&url)
            .await
            .expect("connect to TEST_POSTGRES_URL");
        let dir = tempfile::tempdir().unwrap();
        let (root, store) = Self::store_over(&dir);
        Some(Backend {
            kind: Kind::Postgres,
            warehouse: WarehouseUrl::parse(&url).unwrap(),
            root,
            store,
            history: test_services::unique_name("rsu_hist_"),
            conn: Conn::Pg(conn),
            _schema: Some(schema),
            _dir: dir,
        })
    }

    /// Ends the test: its connection closes; the PostgreSQL schema and the SQLite file go
    /// with the fixtures.
    pub async fn finish(self) {
        let Backend { conn, .. } = self;
        match conn {
            Conn::Pg(c) => drop(c.close().await),
            Conn::Sqlite(c) => drop(c.close().await),
        }
    }

    pub async fn exec(&mut self, sql: &str) {
        let q = || sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()));
        on_conn!(&mut self.conn, |c| q().execute(c).await.map(|_| ()))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Creates a table with a unique name (`prefix` + a suffix) and these columns.
    pub async fn table(&mut self, prefix: &str, columns: &str) -> String {
        let t = test_services::unique_name(prefix);
        self.exec(&format!("CREATE TABLE {t} ({columns})")).await;
        t
    }

    /// `SELECT id, v FROM table ORDER BY id, v`.
    pub async fn rows(&mut self, table: &str) -> Rows {
        let sql = format!("SELECT id, v FROM {table} ORDER BY id, v");
        on_conn!(&mut self.conn, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Where each row is stored, by id: a row deleted and inserted again moves (PostgreSQL's
    /// `ctid`, SQLite's `rowid`).
    pub async fn row_ids(&mut self, table: &str) -> Vec<String> {
        let sql = match self.kind {
            Kind::Postgres => format!("SELECT ctid::text FROM {table} ORDER BY id"),
            Kind::Sqlite => format!("SELECT CAST(rowid AS TEXT) FROM {table} ORDER BY id"),
        };
        on_conn!(&mut self.conn, |c| sqlx::query_scalar(sqlx::AssertSqlSafe(
            sql
        ))
        .fetch_all(c)
        .await
        .unwrap())
    }

    /// History rows of this test with `status`.
    pub async fn history_rows(&mut self, status: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE status = '{status}'",
            self.history
        );
        on_conn!(&mut self.conn, |c| sqlx::query_scalar(sqlx::AssertSqlSafe(
            sql
        ))
        .fetch_one(c)
        .await
        .unwrap())
    }

    /// Writes a file into the store (`rel`: its key).
    pub fn write(&self, rel: &str, data: &[u8]) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// The names in a directory of the store, sorted.
    pub fn files_in(&self, dir: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Writes the manifest `name` (`manifest.edn`, `.toml`, `.json`) into `dir` and returns
    /// the batch of every file of `dir` its data pattern matches, as the store lists them
    /// (key, ETag, size), sorted by key.
    pub async fn batch(&self, dir: &str, name: &str, manifest: &str) -> Batch {
        let manifest_key = format!("{dir}/{name}");
        self.write(&manifest_key, manifest.as_bytes());
        let format = ManifestFormat::from_file_name(name).unwrap();
        let manifest = Manifest::parse(manifest, format, &manifest_key).unwrap();
        let mut files: Vec<DataFile> = self
            .store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|o| DataFile {
                key: o.location.to_string(),
                etag: o.e_tag,
                size: o.size,
            })
            .filter(|f| f.key.starts_with(&format!("{dir}/")) && manifest.matches(&f.key))
            .collect();
        files.sort_by(|a, b| a.key.cmp(&b.key));
        assert!(!files.is_empty(), "no data files in {dir}");
        Batch {
            directory: dir.to_string(),
            manifest_key,
            manifest,
            files,
        }
    }

    /// A loader with this test's history table and these fast paths.
    pub fn loader(&self, fast_paths: FastPaths) -> Loader {
        self.loader_with(LoadOptions {
            fast_paths,
            ..LoadOptions::default()
        })
    }

    /// A loader with these options and this test's history table.
    pub fn loader_with(&self, opts: LoadOptions) -> Loader {
        let opts = LoadOptions {
            history_table: TableName::parse(&self.history).unwrap(),
            ..opts
        };
        Loader::new(self.warehouse.clone(), opts).unwrap()
    }

    /// Loads with a time limit.
    pub async fn load(
        &self,
        loader: &Loader,
        batch: &Batch,
    ) -> redshift_upsert::Result<LoadReport> {
        tokio::time::timeout(Duration::from_secs(60), loader.load(&self.store, batch))
            .await
            .expect("load timed out")
    }

    /// The path a load took: `pg` on PostgreSQL; SQLite loads are always staged, with the
    /// "latest row per key" step.
    pub fn path(&self, pg: LoadPath) -> Option<LoadPath> {
        Some(match self.kind {
            Kind::Postgres => pg,
            Kind::Sqlite => LoadPath::Staged {
                dedupe_skipped: false,
            },
        })
    }
}

/// Declares each test body (an `async fn(&mut Backend)`) once per backend:
/// `sqlite::NAME` and `postgres::NAME`.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let mut b = $crate::backend::Backend::sqlite().await;
                    super::$name(&mut b).await;
                    b.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(mut b) =
                        $crate::backend::Backend::postgres(concat!("conformance postgres::", stringify!($name))).await
                    else {
                        return;
                    };
                    super::$name(&mut b).await;
                    b.finish().await;
                }
            )*
        }
    };
}

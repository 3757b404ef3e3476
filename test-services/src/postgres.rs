//! Scratch PostgreSQL schemas (feature `postgres`): a test gets a schema of its own, reached
//! through a URL whose connections use it as their `search_path`, and dropped (with
//! everything in it) when the fixture is dropped.

use sqlx::Connection;

/// A schema created for one test. Unqualified names in connections made from [`url`](Self::url)
/// resolve in it; dropping the fixture drops the schema with everything in it.
#[derive(Debug)]
pub struct ScratchSchema {
    /// The schema's name (unique to this process and call).
    pub name: String,
    /// The server's URL with `options[search_path]=<name>` added.
    pub url: String,
    server: String,
}

impl ScratchSchema {
    /// Creates a schema named `<prefix><unique>` on the PostgreSQL at `server_url` (e.g.
    /// [`POSTGRES`](crate::POSTGRES)'s value). `prefix`: lower-case letters, digits, `_`.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses `CREATE SCHEMA`.
    pub async fn create(server_url: &str, prefix: &str) -> ScratchSchema {
        let name = crate::unique_name(prefix).to_ascii_lowercase();
        let mut c = sqlx::PgConnection::connect(server_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {server_url}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("CREATE SCHEMA {name}: {e}"));
        let _ = c.close().await;
        let sep = if server_url.contains('?') { '&' } else { '?' };
        ScratchSchema {
            url: format!("{server_url}{sep}options[search_path]={name}"),
            name,
            server: server_url.to_string(),
        }
    }
}

impl Drop for ScratchSchema {
    /// Drops the schema (on a thread of its own: `Drop` cannot await, and the test's runtime
    /// may be a single thread). Best effort, bounded to 30 s.
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let work = async {
                    let mut c = sqlx::PgConnection::connect(&server).await.ok()?;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {name} CASCADE"
                    )))
                    .execute(&mut c)
                    .await
                    .ok()?;
                    c.close().await.ok()
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(30), work).await;
            });
        });
        let _ = dropper.join();
    }
}

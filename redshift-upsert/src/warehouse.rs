//! Warehouse URLs (`postgres://`, `redshift://`, `sqlite://`, and the original's JDBC form)
//! and connection pools.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::error::{Error, Result};
use crate::plan::Dialect;

/// Where to load: the kind and its connection URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WarehouseUrl {
    /// PostgreSQL (`postgres://` or `postgresql://`).
    Postgres(String),
    /// Redshift over the PostgreSQL wire protocol (`redshift://`, stored as `postgres://`).
    Redshift(String),
    /// SQLite (`sqlite://PATH`, stored as the path).
    Sqlite(String),
}

impl WarehouseUrl {
    /// Parses a warehouse URL: `postgres://...`, `redshift://...`, `sqlite://PATH`, or the
    /// original's JDBC form (`jdbc:postgresql://host:port/db?user=u&password=p`;
    /// `jdbc:redshift://...`, or a `jdbc:postgresql` URL whose host ends in
    /// `.redshift.amazonaws.com` or whose port is 5439, is Redshift).
    pub fn parse(s: &str) -> Result<WarehouseUrl> {
        let bad = |m: &str| Error::Warehouse {
            url: redact(s),
            message: m.to_string(),
        };
        if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            return Ok(WarehouseUrl::Postgres(format!("postgres://{rest}")));
        }
        if let Some(rest) = s.strip_prefix("redshift://") {
            return Ok(WarehouseUrl::Redshift(format!("postgres://{rest}")));
        }
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(bad("sqlite:// needs a file path"));
            }
            return Ok(WarehouseUrl::Sqlite(path.to_string()));
        }
        let (jdbc_redshift, rest) = if let Some(r) = s.strip_prefix("jdbc:redshift://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("jdbc:postgresql://") {
            (false, r)
        } else {
            return Err(bad(
                "expected postgres://, redshift://, sqlite://PATH or jdbc:postgresql://",
            ));
        };
        let (hostpath, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hostport, db) = hostpath.split_once('/').unwrap_or((hostpath, ""));
        if hostport.is_empty() || hostport.contains('@') {
            return Err(bad(
                "JDBC URL needs host[:port]/database with credentials as ?user=&password=",
            ));
        }
        let mut user = None;
        let mut password = None;
        let mut params = Vec::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "user" => user = Some(v.to_string()),
                "password" => password = Some(v.to_string()),
                "ssl" if v == "true" => params.push("sslmode=require".to_string()),
                "sslmode" => params.push(format!("sslmode={v}")),
                _ => {} // JDBC-only settings (tcpKeepAlive, ...) have no meaning here.
            }
        }
        let auth = match (user, password) {
            (Some(u), Some(p)) => format!("{u}:{p}@"),
            (Some(u), None) => format!("{u}@"),
            _ => String::new(),
        };
        let q = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        let url = format!("postgres://{auth}{hostport}/{db}{q}");
        let host = hostport.split(':').next().unwrap_or("");
        let redshift = jdbc_redshift
            || host.ends_with(".redshift.amazonaws.com")
            || hostport.ends_with(":5439");
        Ok(if redshift {
            WarehouseUrl::Redshift(url)
        } else {
            WarehouseUrl::Postgres(url)
        })
    }

    /// The plan dialect for this warehouse (`merge`: Redshift plans use `MERGE`).
    pub fn dialect(&self, merge: bool) -> Dialect {
        match self {
            WarehouseUrl::Postgres(_) => Dialect::Postgres,
            WarehouseUrl::Redshift(_) if merge => Dialect::RedshiftMerge,
            WarehouseUrl::Redshift(_) => Dialect::Redshift,
            WarehouseUrl::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The server's host and port (PostgreSQL and Redshift; `None` for SQLite). A URL without
    /// a port gets the driver's default, 5432; a Unix socket path is returned as the host.
    ///
    /// # Errors
    /// The URL does not parse as a connection URL.
    pub fn server(&self) -> Result<Option<(String, u16)>> {
        match self {
            WarehouseUrl::Postgres(u) | WarehouseUrl::Redshift(u) => {
                let o = PgConnectOptions::from_str(u).map_err(|e| Error::Warehouse {
                    url: self.redacted(),
                    message: e.to_string(),
                })?;
                Ok(Some((o.get_host().to_string(), o.get_port())))
            }
            WarehouseUrl::Sqlite(_) => Ok(None),
        }
    }

    /// The URL with any password replaced by `***` (for logs and errors).
    pub fn redacted(&self) -> String {
        match self {
            WarehouseUrl::Postgres(u) => redact(u),
            WarehouseUrl::Redshift(u) => redact(u).replacen("postgres://", "redshift://", 1),
            WarehouseUrl::Sqlite(p) => format!("sqlite://{p}"),
        }
    }
}

/// Replaces a URL's password (`user:PASSWORD@` or `password=...`) with `***`.
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(scheme_end) = out.find("://") {
        let after = scheme_end + 3;
        if let Some(at) = out[after..].find('@').map(|i| i + after)
            && let Some(colon) = out[after..at].find(':').map(|i| i + after)
        {
            out.replace_range(colon + 1..at, "***");
        }
    }
    if let Some(i) = out.find("password=") {
        let start = i + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |j| start + j);
        out.replace_range(start..end, "***");
    }
    out
}

/// A connection pool to one warehouse.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    /// PostgreSQL or Redshift.
    Pg(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// How to connect to a warehouse, as sqlx options.
#[derive(Debug, Clone)]
pub enum ConnectOptions {
    /// PostgreSQL or Redshift.
    Pg(PgConnectOptions),
    /// SQLite.
    Sqlite(SqliteConnectOptions),
}

impl WarehouseUrl {
    /// The connection options the loaders use, for other clients of the same warehouse:
    /// Redshift connections do not send `extra_float_digits` (Redshift refuses it); SQLite
    /// waits up to 30 s for a busy database and does not create a missing file.
    ///
    /// # Errors
    /// The URL is not a valid connection URL.
    pub fn connect_options(&self) -> Result<ConnectOptions> {
        match self {
            WarehouseUrl::Postgres(u) | WarehouseUrl::Redshift(u) => {
                let mut o = PgConnectOptions::from_str(u).map_err(|e| Error::Warehouse {
                    url: self.redacted(),
                    message: e.to_string(),
                })?;
                if matches!(self, WarehouseUrl::Redshift(_)) {
                    o = o.extra_float_digits(None);
                }
                Ok(ConnectOptions::Pg(o))
            }
            WarehouseUrl::Sqlite(path) => Ok(ConnectOptions::Sqlite(
                SqliteConnectOptions::new()
                    .filename(path)
                    .busy_timeout(Duration::from_secs(30)),
            )),
        }
    }
}

/// Opens a pool (lazily connecting) for a warehouse ([`WarehouseUrl::connect_options`];
/// SQLite files are created, in WAL mode).
pub(crate) fn connect(url: &WarehouseUrl, max_connections: u32) -> Result<Pool> {
    match url.connect_options()? {
        ConnectOptions::Pg(o) => {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(30))
                .connect_lazy_with(o.application_name("blueshift"));
            Ok(Pool::Pg(pool))
        }
        ConnectOptions::Sqlite(o) => {
            let o = o
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal);
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.max(1))
                .acquire_timeout(Duration::from_secs(60))
                .connect_lazy_with(o);
            Ok(Pool::Sqlite(pool))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_warehouse_urls() {
        assert_eq!(
            WarehouseUrl::parse("jdbc:postgresql://foo.eu-west-1.redshift.amazonaws.com:5439/db?tcpKeepAlive=true&user=u&password=p").unwrap(),
            WarehouseUrl::Redshift("postgres://u:p@foo.eu-west-1.redshift.amazonaws.com:5439/db".into())
        );
        assert_eq!(
            WarehouseUrl::parse("jdbc:postgresql://127.0.0.1:5432/test?user=postgres").unwrap(),
            WarehouseUrl::Postgres("postgres://postgres@127.0.0.1:5432/test".into())
        );
        assert_eq!(
            WarehouseUrl::parse("redshift://u:p@h:5439/d")
                .unwrap()
                .dialect(true),
            Dialect::RedshiftMerge
        );
        assert_eq!(
            WarehouseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            WarehouseUrl::Sqlite("/tmp/x.db".into())
        );
        assert!(
            WarehouseUrl::parse("mysql://x")
                .unwrap_err()
                .to_string()
                .contains("expected postgres://")
        );
        assert!(WarehouseUrl::parse("...").is_err());
    }

    #[test]
    fn servers_have_host_and_port() {
        let server = |u: &str| WarehouseUrl::parse(u).unwrap().server().unwrap();
        assert_eq!(
            server("postgres://u@db.example:6543/x"),
            Some(("db.example".into(), 6543))
        );
        assert_eq!(
            server("redshift://u:p@rs.example/x"),
            Some(("rs.example".into(), 5432))
        );
        assert_eq!(server("sqlite:///tmp/x.db"), None);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            redact("jdbc:postgresql://h/db?user=u&password=secret&x=1"),
            "jdbc:postgresql://h/db?user=u&password=***&x=1"
        );
        assert_eq!(
            WarehouseUrl::parse("redshift://u:pw@h/d")
                .unwrap()
                .redacted(),
            "redshift://u:***@h/d"
        );
    }
}

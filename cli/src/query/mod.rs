//! `query`: the analyst's command — SQL against the warehouse blueshift loads (Redshift,
//! PostgreSQL or SQLite, the same URLs), printed as an aligned table, CSV, JSON, JSON lines
//! or Markdown.
//!
//! - Statements come from `-c SQL` (repeatable), then `-f FILE`, or stdin when neither is
//!   given; they run in order, split at `;` outside strings, comments and dollar quotes.
//! - `--var name=value` substitutes `:name` with a SQL literal and `:"name"` with an
//!   identifier (quotes doubled); `::` casts and strings are left alone.
//! - Rows stream: each statement's output is held (in memory up to 4 MiB, then in a
//!   temporary file) until the statement succeeded, so memory stays bounded and a failing
//!   statement prints nothing on stdout. `--max-rows N` cuts each result and says so on
//!   stderr.
//! - The first error stops the run: the database's message and the statement's position on
//!   stderr, exit 1. Bad usage exits 2.
//! - Values print as the database writes them (the simple query protocol, text values):
//!   numbers stay numbers in JSON, NULL is `null` (and empty, or `--null TEXT`, elsewhere);
//!   a Redshift `SUPER` column prints like any other.

mod db;
mod format;
mod script;
mod spool;

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use redshift_upsert::WarehouseUrl;

pub use format::Format;

use self::db::Db;
use self::format::Style;
use self::script::{Flavor, Statement, quote_ident, quote_literal};
use self::spool::Spool;

/// Flags of `query`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "query",
    version,
    about = "Run SQL against Redshift, PostgreSQL or SQLite; print a table, CSV, JSON or Markdown"
)]
pub struct QueryArgs {
    /// The warehouse: `postgres://...`, `redshift://...` or `sqlite://PATH` (also
    /// `QUERY_WAREHOUSE`, then `DATABASE_URL`).
    #[arg(long, value_name = "URL")]
    pub warehouse: Option<String>,
    /// SQL to run (one or more statements; repeatable, run in order).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub commands: Vec<String>,
    /// A file of SQL statements, run after the `-c` ones.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Output format [default: table on a terminal, csv otherwise].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Leave out the header line (table and CSV).
    #[arg(long)]
    pub no_header: bool,
    /// How NULL prints in table, CSV and Markdown output (JSON has `null`).
    #[arg(long = "null", value_name = "TEXT", default_value = "")]
    pub null: String,
    /// Print at most N rows of each result (and say so on stderr).
    #[arg(long, value_name = "N")]
    pub max_rows: Option<u64>,
    /// Set a variable: `:name` becomes a SQL literal, `:"name"` an identifier (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = parse_var)]
    pub vars: Vec<(String, String)>,
    /// Print each statement's time on stderr.
    #[arg(long)]
    pub timing: bool,
    /// List tables or describe one instead of running SQL.
    #[command(subcommand)]
    pub meta: Option<Meta>,
}

/// `query tables`, `query describe`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Meta {
    /// List tables and views (schema, name, type).
    Tables {
        /// Only this schema (SQLite: an attached database).
        #[arg(long, value_name = "SCHEMA")]
        schema: Option<String>,
    },
    /// Describe a table: its columns, types and nullability.
    Describe {
        /// `table` or `schema.table`.
        table: String,
    },
}

fn parse_var(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v))
            if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "{s:?}: expected NAME=VALUE, NAME of letters, digits and _"
        )),
    }
}

/// Why a run stopped early: bad usage (exit 2) or a failed statement (exit 1).
enum Stop {
    Usage(String),
    Failed(String),
}

/// Runs the command; its exit status: 0, 1 (a statement or the connection failed), 2 (bad
/// usage).
pub fn run(args: QueryArgs) -> ExitCode {
    lifecycle::logging::init(lifecycle::logging::LogFormat::Text);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("query: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Stop::Usage(m)) => {
            eprintln!("query: {m}");
            ExitCode::from(2)
        }
        Err(Stop::Failed(m)) => {
            eprintln!("query: {m}");
            ExitCode::from(1)
        }
    }
}

async fn run_async(args: QueryArgs) -> Result<(), Stop> {
    let url = args
        .warehouse
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
        .ok_or_else(|| {
            Stop::Usage(
                "no warehouse: give --warehouse URL (or QUERY_WAREHOUSE, DATABASE_URL)".into(),
            )
        })?;
    let url = WarehouseUrl::parse(&url).map_err(|e| Stop::Usage(e.to_string()))?;
    if args.meta.is_some() && (!args.commands.is_empty() || args.file.is_some()) {
        return Err(Stop::Usage(
            "tables/describe take no -c or -f statements".into(),
        ));
    }
    let vars: HashMap<String, String> = args.vars.iter().cloned().collect();
    let mut db = Db::connect(&url)
        .await
        .map_err(|e| Stop::Failed(format!("{}: {e}", url.redacted())))?;
    let flavor = db.flavor();
    let statements = match &args.meta {
        Some(meta) => vec![meta_statement(meta, flavor)],
        None => read_statements(&args, flavor, &vars)?,
    };
    let stdout = std::io::stdout();
    let format = args.format.unwrap_or(if stdout.is_terminal() {
        Format::Table
    } else {
        Format::Csv
    });
    let width = stdout
        .is_terminal()
        .then(|| comfy_table::Table::new().width())
        .flatten();
    let style = Style {
        header: !args.no_header,
        null: args.null.clone(),
        width,
    };
    let mut spool = Spool::default();
    let mut out = stdout.lock();
    let result = async {
        for (n, st) in statements.iter().enumerate() {
            let mut writer = format::writer(format, &style);
            let started = Instant::now();
            match db
                .run(&st.sql, writer.as_mut(), &mut spool, args.max_rows)
                .await
            {
                Ok(ran) => {
                    if let Some(Meta::Describe { table }) = &args.meta
                        && ran.rows == 0
                    {
                        spool.discard();
                        return Err(Stop::Failed(format!("describe: no table {table}")));
                    }
                    spool
                        .commit(&mut out)
                        .map_err(|e| Stop::Failed(format!("writing the output: {e}")))?;
                    if ran.cut {
                        eprintln!(
                            "query: {}:{}:{}: output cut at {} rows (--max-rows)",
                            st.source, st.line, st.column, ran.rows
                        );
                    }
                    if args.timing {
                        eprintln!(
                            "Time: {:.3} ms (statement {} of {})",
                            started.elapsed().as_secs_f64() * 1000.0,
                            n + 1,
                            statements.len()
                        );
                    }
                }
                Err(e) => {
                    spool.discard();
                    return Err(Stop::Failed(format!(
                        "{}:{}:{}: {e}",
                        st.source, st.line, st.column
                    )));
                }
            }
        }
        Ok(())
    }
    .await;
    db.close().await;
    result
}

/// A small result read whole: column names, and rows of values (NULL as `None`).
pub type Fetched = (Vec<String>, Vec<Vec<Option<String>>>);

/// Runs one SQL statement on a warehouse URL and returns its column names and rows (values
/// as the database writes them, NULL as `None`), at most `max_rows` of them: for other tools
/// reading a small result (the `experiment` binary's counts).
///
/// # Errors
/// A bad URL, a connection or statement failure, or more than one statement.
pub fn fetch(url: &str, sql: &str, max_rows: u64) -> anyhow::Result<Fetched> {
    struct Collect {
        names: Vec<String>,
        rows: Vec<Vec<Option<String>>>,
    }
    impl format::ResultWriter for Collect {
        fn columns(&mut self, _: &mut dyn std::io::Write, names: &[String]) -> std::io::Result<()> {
            self.names = names.to_vec();
            Ok(())
        }
        fn row(
            &mut self,
            _: &mut dyn std::io::Write,
            values: &[format::Value],
        ) -> std::io::Result<()> {
            self.rows.push(
                values
                    .iter()
                    .map(|v| (v.kind != format::Kind::Null).then(|| v.text.clone()))
                    .collect(),
            );
            Ok(())
        }
        fn finish(&mut self, _: &mut dyn std::io::Write) -> std::io::Result<()> {
            Ok(())
        }
    }
    let url = WarehouseUrl::parse(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut db = Db::connect(&url).await?;
        let statements = script::split(sql, "--sql", db.flavor(), &HashMap::new())?;
        let [statement] = statements.as_slice() else {
            anyhow::bail!("--sql: expected one statement, got {}", statements.len());
        };
        let mut collect = Collect {
            names: Vec::new(),
            rows: Vec::new(),
        };
        let ran = db
            .run(
                &statement.sql,
                &mut collect,
                &mut std::io::sink(),
                Some(max_rows),
            )
            .await;
        db.close().await;
        let ran = ran?;
        if ran.cut {
            anyhow::bail!("--sql: more than {max_rows} rows");
        }
        Ok((collect.names, collect.rows))
    })
}

/// Every statement of `-c` (in order), then `-f`, or stdin when neither is given.
fn read_statements(
    args: &QueryArgs,
    flavor: Flavor,
    vars: &HashMap<String, String>,
) -> Result<Vec<Statement>, Stop> {
    let mut out = Vec::new();
    let mut add = |text: &str, source: &str| -> Result<(), Stop> {
        let s =
            script::split(text, source, flavor, vars).map_err(|e| Stop::Usage(e.to_string()))?;
        out.extend(s);
        Ok(())
    };
    for (i, c) in args.commands.iter().enumerate() {
        add(c, &format!("-c #{}", i + 1))?;
    }
    if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Stop::Usage(format!("{}: {e}", path.display())))?;
        add(&text, &path.display().to_string())?;
    }
    if args.commands.is_empty() && args.file.is_none() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Stop::Usage(format!("stdin: {e}")))?;
        add(&text, "stdin")?;
    }
    if out.is_empty() {
        return Err(Stop::Usage("no statement to run".into()));
    }
    Ok(out)
}

/// The catalogue query of `tables` or `describe`, for the warehouse's dialect.
fn meta_statement(meta: &Meta, flavor: Flavor) -> Statement {
    let sql = match (meta, flavor) {
        (Meta::Tables { schema }, Flavor::Sqlite) => {
            let db = schema
                .as_deref()
                .map_or_else(|| "main".to_string(), quote_ident);
            format!(
                "SELECT {} AS schema, name, type FROM {db}.sqlite_master \
                 WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name",
                quote_literal(schema.as_deref().unwrap_or("main"))
            )
        }
        (Meta::Tables { schema }, _) => {
            let only = schema
                .as_deref()
                .map(|s| format!(" AND table_schema = {}", quote_literal(s)))
                .unwrap_or_default();
            format!(
                "SELECT table_schema AS schema, table_name AS name, \
                 CASE table_type WHEN 'BASE TABLE' THEN 'table' WHEN 'VIEW' THEN 'view' ELSE lower(table_type) END AS type \
                 FROM information_schema.tables \
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
                 AND table_schema NOT LIKE 'pg\\_temp\\_%' AND table_schema NOT LIKE 'pg\\_toast%'{only} \
                 ORDER BY 1, 2"
            )
        }
        (Meta::Describe { table }, Flavor::Sqlite) => {
            let (db, name) = match table.split_once('.') {
                Some((d, n)) => (quote_literal(d), quote_literal(n)),
                None => ("'main'".to_string(), quote_literal(table)),
            };
            format!(
                "SELECT name AS column, type, CASE \"notnull\" WHEN 0 THEN 'yes' ELSE 'no' END AS nullable \
                 FROM pragma_table_info({name}, {db}) ORDER BY cid"
            )
        }
        (Meta::Describe { table }, _) => {
            let filter = match table.split_once('.') {
                Some((s, n)) => format!(
                    "table_schema = {} AND table_name = {}",
                    quote_literal(s),
                    quote_literal(n)
                ),
                None => format!(
                    "table_name = {} AND table_schema = ANY (current_schemas(false))",
                    quote_literal(table)
                ),
            };
            format!(
                "SELECT column_name AS column, data_type AS type, \
                 CASE is_nullable WHEN 'YES' THEN 'yes' ELSE 'no' END AS nullable \
                 FROM information_schema.columns WHERE {filter} ORDER BY ordinal_position"
            )
        }
    };
    Statement {
        sql,
        source: match meta {
            Meta::Tables { .. } => "tables".into(),
            Meta::Describe { .. } => "describe".into(),
        },
        line: 1,
        column: 1,
    }
}

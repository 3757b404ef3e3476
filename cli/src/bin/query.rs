//! `query`: SQL against Redshift, PostgreSQL or SQLite, printed as a table, CSV, JSON, JSON
//! lines or Markdown. See `cli::query`.

fn main() -> std::process::ExitCode {
    cli::query::run(lifecycle::parse("query"))
}

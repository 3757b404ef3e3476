//! The transform stage: each archived object is one unit of work on the `state-machine`
//! executor (read → transform → write a data file and a `manifest.edn`), so a failure
//! retries that object only. Events become rows keyed by their Kafka topic, partition and
//! offset: a replayed object upserts the same rows instead of duplicating them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use state_machine::{Machine, StepError, Transition};

/// The warehouse table the events are loaded into.
pub const TABLE: &str = "syslog_events";

/// Its columns, in data-file order; the key is (topic, kafka_partition, kafka_offset).
pub const COLUMNS: [&str; 10] = [
    "topic",
    "kafka_partition",
    "kafka_offset",
    "ts",
    "received",
    "host",
    "app",
    "facility",
    "severity",
    "message",
];

/// `CREATE TABLE IF NOT EXISTS` for the table (the same text on SQLite, PostgreSQL and
/// Redshift).
pub fn create_table_sql() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {TABLE} (topic VARCHAR(249) NOT NULL, kafka_partition INTEGER NOT NULL, \
         kafka_offset BIGINT NOT NULL, ts VARCHAR(64), received VARCHAR(64), host VARCHAR(255), app VARCHAR(255), \
         facility VARCHAR(16), severity VARCHAR(16), message VARCHAR(65535), \
         PRIMARY KEY (topic, kafka_partition, kafka_offset))"
    )
}

/// The manifest blueshift loads each directory with: a merge upsert on the Kafka position.
pub fn manifest() -> String {
    let cols: Vec<String> = COLUMNS.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "{{:table \"{TABLE}\" :pk-columns [\"topic\" \"kafka_partition\" \"kafka_offset\"] :columns [{}] :options [\"CSV\"] :data-pattern \".*csv$\" :strategy \"merge\"}}\n",
        cols.join(" ")
    )
}

/// A unit's state: the archived object to transform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// An object under the archive prefix.
    Archived {
        /// Its key.
        key: String,
    },
}

/// The fields of syslogger's `--format json` payload the table keeps.
#[derive(Debug, Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    received: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    host: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    appname: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    facility: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    severity: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<std::borrow::Cow<'a, str>>,
}

/// What the stage has done.
#[derive(Debug, Default)]
pub struct Counts {
    /// Objects transformed.
    pub objects: AtomicU64,
    /// Rows written into data files.
    pub rows: AtomicU64,
}

/// The machine: reads archive objects from the store and writes load directories into it.
pub struct Transformer {
    /// The store (the archive and the load directories).
    pub store: Arc<dyn ObjectStore>,
    /// Where load directories go (`<prefix>/loads`).
    pub loads: String,
    /// Progress.
    pub counts: Arc<Counts>,
}

/// One CSV field: NULL unquoted and empty, text always quoted (quotes doubled).
fn field(out: &mut String, v: Option<&str>) {
    if let Some(v) = v {
        out.push('"');
        for c in v.chars() {
            if c == '"' {
                out.push('"');
            }
            out.push(c);
        }
        out.push('"');
    }
}

impl Transformer {
    /// The load directory of an archive object and its CSV data.
    fn transform(&self, key: &str, bytes: &[u8]) -> Result<(String, String, u64), StepError> {
        let parsed = bifrost::parse_key(key)
            .ok_or_else(|| StepError::permanent(format!("{key}: not an archive object key")))?;
        let topic = parsed
            .dir
            .rsplit('/')
            .nth(1)
            .ok_or_else(|| StepError::permanent(format!("{key}: no topic in the key")))?
            .to_string();
        let range = bifrost::ObjectRange::parse(bytes)
            .map_err(|e| StepError::permanent(format!("{key}: no range header: {e}")))?;
        let span = u64::try_from(range.last - range.first + 1).unwrap_or(0);
        if range.first != parsed.first || span != range.records {
            return Err(StepError::permanent(format!(
                "{key}: records at offsets {}..={} are not one per offset ({} records): cannot key them",
                range.first, range.last, range.records
            )));
        }
        let reader =
            baldr::open_reader(bytes).map_err(|e| StepError::permanent(format!("{key}: {e}")))?;
        let mut csv = String::with_capacity(bytes.len() * 4);
        let mut offset = range.first;
        for record in reader {
            let record = record.map_err(|e| StepError::permanent(format!("{key}: {e}")))?;
            let event: Event = serde_json::from_slice(&record).map_err(|e| {
                StepError::permanent(format!("{key} offset {offset}: not syslogger JSON: {e}"))
            })?;
            field(&mut csv, Some(&topic));
            let _ = write!(csv, ",{},{offset},", parsed.partition);
            for (i, v) in [
                &event.timestamp,
                &event.received,
                &event.host,
                &event.appname,
                &event.facility,
                &event.severity,
                &event.message,
            ]
            .into_iter()
            .enumerate()
            {
                if i > 0 {
                    csv.push(',');
                }
                field(&mut csv, v.as_deref());
            }
            csv.push('\n');
            offset += 1;
        }
        let rows = u64::try_from(offset - range.first).unwrap_or(0);
        if rows != range.records {
            return Err(StepError::permanent(format!(
                "{key}: {rows} records, its header says {}",
                range.records
            )));
        }
        let dir = format!(
            "{}/{topic}/partition={}/{:010}",
            self.loads, parsed.partition, range.first
        );
        Ok((dir, csv, rows))
    }
}

impl Machine for Transformer {
    type State = Step;

    fn state_name(&self, _: &Step) -> &'static str {
        "transform"
    }

    async fn step(&self, _id: &str, state: &Step) -> Result<Transition<Step>, StepError> {
        let Step::Archived { key } = state;
        let bytes = self
            .store
            .get(&Path::from(key.as_str()))
            .await
            .map_err(|e| StepError::transient(format!("reading {key}: {e}")))?
            .bytes()
            .await
            .map_err(|e| StepError::transient(format!("reading {key}: {e}")))?;
        let (dir, csv, rows) = self.transform(key, &bytes)?;
        // The data file first: blueshift loads a directory once its manifest is there.
        for (name, body) in [("events.csv", csv), ("manifest.edn", manifest())] {
            let path = Path::from(format!("{dir}/{name}"));
            self.store
                .put(&path, PutPayload::from(body))
                .await
                .map_err(|e| StepError::transient(format!("writing {path}: {e}")))?;
        }
        self.counts.objects.fetch_add(1, Ordering::Relaxed);
        self.counts.rows.fetch_add(rows, Ordering::Relaxed);
        Ok(Transition::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_keep_null_apart_from_empty_and_double_quotes() {
        let mut s = String::new();
        field(&mut s, None);
        s.push(',');
        field(&mut s, Some(""));
        s.push(',');
        field(&mut s, Some("say \"hi\", then\nleave"));
        assert_eq!(s, ",\"\",\"say \"\"hi\"\", then\nleave\"");
    }

    #[test]
    fn the_manifest_parses_and_keys_on_the_kafka_position() {
        let m = redshift_upsert::Manifest::parse(
            &manifest(),
            redshift_upsert::ManifestFormat::Edn,
            "loads/x/manifest.edn",
        )
        .unwrap();
        assert_eq!(m.pk_columns.len(), 3);
        assert_eq!(m.columns.len(), COLUMNS.len());
    }
}

//! The service's flags, and those of `bifrost verify` and `bifrost replay`.

use std::path::PathBuf;
use std::time::Duration;

/// How objects are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Codec {
    /// gzip (`.baldr.gz`), as the original wrote.
    Gzip,
    /// zstd (`.baldr.zst`).
    Zstd,
}

impl Codec {
    /// The object name's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::Gzip => ".baldr.gz",
            Codec::Zstd => ".baldr.zst",
        }
    }

    /// The level when `--compression-level` is not given: gzip 4 (zlib-rs at level 4
    /// compresses ~3x as fast as `gzip -6` for a file 1% larger; `benches/README.md`), zstd 3.
    pub fn default_level(self) -> i32 {
        match self {
            Codec::Gzip => 4,
            Codec::Zstd => 3,
        }
    }
}

/// What to do with a tombstone (a message without a value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tombstones {
    /// Leave it out of the object (its offset is still covered by the object's range).
    Skip,
    /// Archive it as an empty record.
    Empty,
    /// Stop the service with an error (the message is not committed).
    Fail,
}

/// A byte count: a number with an optional unit (`64MiB`, `1GiB`, `500k`, `1000000`).
///
/// # Errors
/// Not a number with a known unit, or zero.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a byte count such as 1000000, 64MiB or 1GiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        u => {
            return Err(format!(
                "{text:?}: unknown unit {u:?} (B, kB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    match n.checked_mul(mult) {
        Some(0) => Err(format!("{text:?}: must be more than zero")),
        Some(v) => Ok(v),
        None => Err(format!("{text:?}: too large")),
    }
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    kafka_seq::parse_property(text).map_err(|e| e.to_string())
}

/// The service's flags. With `service-lifecycle`'s parsing each is also read from
/// `BIFROST_<FLAG>` and from the `--config` file.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Kafka bootstrap servers (`host:port,...`).
    #[arg(long, value_name = "LIST", required = true)]
    pub brokers: Option<String>,
    /// The consumer group; also the first part of every key. Instances in one group share
    /// the partitions.
    #[arg(long, value_name = "ID", required = true)]
    pub group: Option<String>,
    /// Archive the topics whose whole name matches this regular expression (topics created
    /// later are picked up).
    #[arg(long, value_name = "REGEX", required = true)]
    pub topics: Option<String>,
    /// Of the matching topics, archive only those whose name matches one of these
    /// (repeatable; a regular expression matching the whole name).
    #[arg(long = "allow-topic", value_name = "REGEX")]
    pub allow_topics: Vec<String>,
    /// Never archive topics whose name matches one of these (repeatable; a regular
    /// expression matching the whole name). Their partitions are paused, not read.
    #[arg(long = "deny-topic", value_name = "REGEX")]
    pub deny_topics: Vec<String>,
    /// Where objects go: `s3://BUCKET[/PREFIX]`, `file:///ABS/DIR` or a directory.
    #[arg(long, value_name = "URL", required = true)]
    pub store: Option<String>,
    /// Options of the store (`--store-option aws_endpoint=http://...`).
    #[command(flatten)]
    pub store_options: lifecycle::store::StoreOptions,
    /// A key prefix under the store URL: keys are `[<prefix>/]<group>/<topic>/partition=<p>/<first-offset>.baldr.gz`.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Upload a partition's file once it holds this many messages.
    #[arg(long, value_name = "N", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rotate_records: u64,
    /// Upload a partition's file once its records take this many bytes uncompressed
    /// (`64MiB`); at most 3/8 of `--memory-budget`.
    #[arg(long, value_name = "BYTES", default_value = "64MiB", value_parser = parse_bytes)]
    pub rotate_bytes: u64,
    /// Upload a partition's file once its oldest record is this old, even when no new
    /// message arrives.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = lifecycle::duration::positive)]
    pub rotate_interval: Duration,
    /// Object compression.
    #[arg(long, value_name = "CODEC", value_enum, default_value_t = Codec::Gzip)]
    pub compression: Codec,
    /// Compression level (gzip 0-9, default 4; zstd 1-22, default 3).
    #[arg(long, value_name = "N")]
    pub compression_level: Option<i32>,
    /// Keep each partition's position as a token object beside its data
    /// (`_bifrost_token`: `<topic> <partition> <next-offset>`), read at assignment: a
    /// deleted token replays the partition from the beginning, replacing its objects.
    #[arg(long)]
    pub tokens: bool,
    /// Memory for buffers, whatever the number of partitions: librdkafka's fetch queue
    /// gets 1/4 (1/16 as queued payload bytes: each queued message also costs librdkafka
    /// ~128 bytes and its fetch buffer), spool writes 1/8, compression and uploads 3/8;
    /// past it partitions pause.
    #[arg(long, value_name = "BYTES", default_value = "256MiB", value_parser = parse_bytes)]
    pub memory_budget: u64,
    /// What to do with tombstones (messages without a value); each is counted.
    #[arg(long, value_name = "WHAT", value_enum, default_value_t = Tombstones::Skip)]
    pub tombstones: Tombstones,
    /// A librdkafka consumer property (`-X fetch.min.bytes=65536`; repeatable; in the
    /// config file `kafka-property = [...]`).
    #[arg(short = 'X', long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Directory for the local spool files (a subdirectory per process, removed at exit;
    /// those of dead processes are removed at start).
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// At shutdown, how long open files may take to be uploaded before they are abandoned
    /// (their messages are read again later); keep it under `--drain-timeout`.
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = lifecycle::duration::non_negative)]
    pub finish_timeout: Duration,
}

impl Args {
    /// Flags with these required values and every other flag at its default.
    pub fn new(
        brokers: impl Into<String>,
        group: impl Into<String>,
        topics: impl Into<String>,
        store: impl Into<String>,
    ) -> Args {
        Args {
            brokers: Some(brokers.into()),
            group: Some(group.into()),
            topics: Some(topics.into()),
            allow_topics: Vec::new(),
            deny_topics: Vec::new(),
            store: Some(store.into()),
            store_options: Default::default(),
            prefix: String::new(),
            rotate_records: 1_000_000,
            rotate_bytes: 64 << 20,
            rotate_interval: Duration::from_secs(300),
            compression: Codec::Gzip,
            compression_level: None,
            tokens: false,
            memory_budget: 256 << 20,
            tombstones: Tombstones::Skip,
            kafka_properties: Vec::new(),
            spool_dir: None,
            finish_timeout: Duration::from_secs(20),
        }
    }
}

/// `bifrost verify`: what the archive under a prefix covers.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The store: `s3://BUCKET[/PREFIX]`, `file:///ABS/DIR` or a directory.
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Options of the store.
    #[command(flatten)]
    pub store_options: lifecycle::store::StoreOptions,
    /// Only keys under this prefix (a group, `group/topic`, a partition's directory...).
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Also decode every object and check its records and bytes against its range header.
    #[arg(long)]
    pub deep: bool,
}

/// `bifrost replay`: make the service archive one partition again from an offset.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The store the service writes to.
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// Options of the store.
    #[command(flatten)]
    pub store_options: lifecycle::store::StoreOptions,
    /// The service's `--prefix`.
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// The service's `--group`.
    #[arg(long, value_name = "ID")]
    pub group: String,
    /// The topic.
    #[arg(long, value_name = "T")]
    pub topic: String,
    /// The partition.
    #[arg(long, value_name = "P")]
    pub partition: i32,
    /// Replay from this offset (from the start of the object holding it).
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    pub from: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("500k"), Ok(500_000));
        assert!(parse_bytes("0").unwrap_err().contains("more than zero"));
        assert!(
            parse_bytes("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn new_is_what_the_flags_default_to() {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: Args,
        }
        let parsed = <P as clap::Parser>::try_parse_from([
            "b",
            "--brokers=k",
            "--group=g",
            "--topics=t",
            "--store=s",
        ])
        .unwrap()
        .a;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", Args::new("k", "g", "t", "s"))
        );
    }
}

//! Where objects go: `[<prefix>/]<group>/<topic>/partition=<p>/<first-offset %010d>.baldr.gz`,
//! the token beside them, and reading keys back.

use std::sync::LazyLock;

use regex::Regex;

use crate::args::Codec;

/// The file name of a partition's offset token, inside the partition's directory. It
/// starts with `_`, which Hive-style readers (Spark, Athena) skip.
pub const TOKEN_NAME: &str = "_bifrost_token";

/// The directory of one partition's objects, relative to the store URL's prefix:
/// `[<prefix>/]<group>/<topic>/partition=<p>`.
pub fn partition_dir(prefix: &str, group: &str, topic: &str, partition: i32) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{group}/{topic}/partition={partition}")
    } else {
        format!("{prefix}/{group}/{topic}/partition={partition}")
    }
}

/// The name of the object whose first offset is `first`: `%010d` like the original, longer
/// past ten digits.
pub fn object_name(first: i64, codec: Codec) -> String {
    format!("{first:010}{}", codec.suffix())
}

/// An object key read back: its partition directory and first offset.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParsedKey {
    /// `[<prefix>/]<group>/<topic>/partition=<p>`.
    pub dir: String,
    /// The partition number.
    pub partition: i32,
    /// The first offset, from the file name.
    pub first: i64,
}

static KEY: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^(?P<dir>(?:.*/)?partition=(?P<p>\d{1,10}))/(?P<first>\d{1,19})\.baldr(?:\.gz|\.zst)?$",
    )
    .ok()
});

/// Parses a key written by bifrost (any prefix); `None` for anything else (tokens, other
/// files).
pub fn parse_key(key: &str) -> Option<ParsedKey> {
    let c = KEY.as_ref()?.captures(key)?;
    Some(ParsedKey {
        dir: c.name("dir")?.as_str().to_string(),
        partition: c.name("p")?.as_str().parse().ok()?,
        first: c.name("first")?.as_str().parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_originals() {
        let dir = partition_dir("", "archiver", "events", 3);
        assert_eq!(
            format!("{dir}/{}", object_name(42, Codec::Gzip)),
            "archiver/events/partition=3/0000000042.baldr.gz"
        );
        assert_eq!(
            format!(
                "{}/{}",
                partition_dir("/p/q/", "g", "t", 0),
                object_name(12_345_678_901, Codec::Zstd)
            ),
            "p/q/g/t/partition=0/12345678901.baldr.zst"
        );
        let k = parse_key("p/q/g/t/partition=0/12345678901.baldr.zst").unwrap();
        assert_eq!(
            (k.dir.as_str(), k.partition, k.first),
            ("p/q/g/t/partition=0", 0, 12_345_678_901)
        );
        let k = parse_key("g/t/partition=7/0000000000.baldr.gz").unwrap();
        assert_eq!((k.partition, k.first), (7, 0));
        assert!(parse_key("g/t/partition=7/_bifrost_token").is_none());
        assert!(parse_key("g/t/partition=7/00.json").is_none());
    }
}

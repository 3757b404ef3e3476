//! Offset tokens: `<topic> <partition> <next-offset>` in `_bifrost_token` beside a
//! partition's objects (`--tokens`), and `bifrost replay`'s `... <offset> replay`.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

/// A partition's position as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset to archive.
    pub next: i64,
    /// Written by `bifrost replay`: archive again from `next`, replacing objects.
    pub replay: bool,
}

impl Token {
    /// The token's text.
    pub fn text(&self) -> String {
        if self.replay {
            format!("{} {} {} replay\n", self.topic, self.partition, self.next)
        } else {
            format!("{} {} {}\n", self.topic, self.partition, self.next)
        }
    }

    /// Parses a token and checks it is the partition's.
    ///
    /// # Errors
    /// [`Error::BadToken`] naming the key.
    pub fn parse(key: &str, text: &str, topic: &str, partition: i32) -> Result<Token> {
        let bad = |message: String| Error::BadToken {
            key: key.to_string(),
            message,
        };
        let words: Vec<&str> = text.split_ascii_whitespace().collect();
        let (t, p, n, replay) = match words.as_slice() {
            [t, p, n] => (*t, *p, *n, false),
            [t, p, n, "replay"] => (*t, *p, *n, true),
            _ => {
                return Err(bad(format!(
                    "{text:?}: expected `<topic> <partition> <next-offset>`"
                )));
            }
        };
        let p: i32 = p.parse().map_err(|_| bad(format!("partition {p:?}")))?;
        let next: i64 = n.parse().map_err(|_| bad(format!("offset {n:?}")))?;
        if t != topic || p != partition || next < 0 {
            return Err(bad(format!(
                "{text:?} is not a position of {topic} [{partition}]"
            )));
        }
        Ok(Token {
            topic: t.to_string(),
            partition: p,
            next,
            replay,
        })
    }
}

/// Reads the token at `key`; `None` when there is none.
///
/// # Errors
/// The store fails, or the token does not parse.
pub async fn read(
    store: &dyn ObjectStore,
    url: &str,
    key: &Path,
    topic: &str,
    partition: i32,
) -> Result<Option<Token>> {
    let object_err = |source| Error::Object {
        url: url.to_string(),
        op: "get",
        key: key.to_string(),
        source: Box::new(source),
    };
    let bytes = match store.get(key).await {
        Ok(r) => r.bytes().await.map_err(object_err)?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(object_err(e)),
    };
    let text = String::from_utf8_lossy(&bytes);
    Token::parse(key.as_ref(), &text, topic, partition).map(Some)
}

/// Writes (replaces) the token at `key`.
///
/// # Errors
/// The store fails.
pub async fn write(store: &dyn ObjectStore, url: &str, key: &Path, token: &Token) -> Result<()> {
    store
        .put(key, PutPayload::from(token.text()))
        .await
        .map(|_| ())
        .map_err(|source| Error::Object {
            url: url.to_string(),
            op: "put",
            key: key.to_string(),
            source: Box::new(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_name_what_is_wrong() {
        let t = Token::parse("k", "events 3 1200\n", "events", 3).unwrap();
        assert_eq!((t.next, t.replay), (1200, false));
        assert_eq!(t.text(), "events 3 1200\n");
        let r = Token::parse("k", "events 3 7 replay", "events", 3).unwrap();
        assert!(r.replay);
        assert_eq!(Token::parse("k", &r.text(), "events", 3).unwrap(), r);
        let e = Token::parse("g/t/_bifrost_token", "other 3 1", "events", 3).unwrap_err();
        assert!(e.to_string().contains("g/t/_bifrost_token"), "{e}");
        assert!(Token::parse("k", "events 3", "events", 3).is_err());
        assert!(Token::parse("k", "events 3 -1", "events", 3).is_err());
    }
}

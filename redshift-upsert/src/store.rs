//! The object store the data files are read from: any `object_store` store (S3 or an S3 API
//! server, a local directory, memory), reading objects as streams and small objects
//! (manifests) whole.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use tokio_util::io::StreamReader;

use crate::error::{Error, Result};
use crate::records::BoxBufRead;

/// The most objects one listing may return (bounds memory per poll).
pub(crate) const MAX_LISTED: usize = 1_000_000;

/// An opened store and the prefix being watched.
#[derive(Debug, Clone)]
pub struct Store {
    /// The store (keys are relative to the bucket or the `file://` root).
    pub inner: Arc<dyn ObjectStore>,
    /// The watched prefix (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// `s3://bucket` for S3 stores (Redshift COPY reads files through it).
    pub s3_base: Option<String>,
    /// The URL as given.
    pub url: String,
}

impl Store {
    /// A store over `inner` (keys relative to its root), watching `prefix`; `s3_bucket` names
    /// the bucket when `inner` is S3 (Redshift's COPY reads the files from there); `url` is
    /// how it is shown in logs. Opening one from a URL is the caller's business (the
    /// `blueshift` service uses `service-lifecycle`'s `store::open`).
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        prefix: &str,
        s3_bucket: Option<&str>,
        url: impl Into<String>,
    ) -> Store {
        Store {
            inner,
            prefix: prefix.trim_matches('/').to_string(),
            s3_base: s3_bucket.map(|b| format!("s3://{b}")),
            url: url.into(),
        }
    }

    fn serr(key: &str) -> impl FnOnce(object_store::Error) -> Error + '_ {
        move |source| Error::Store {
            location: key.to_string(),
            source,
        }
    }

    /// Every object under the watched prefix: at most a million ([`Error::TooManyObjects`]
    /// beyond, which bounds memory per poll).
    pub async fn list(&self) -> Result<Vec<ObjectMeta>> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let mut s = self.inner.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            out.push(m.map_err(Self::serr(&self.prefix))?);
            if out.len() > MAX_LISTED {
                return Err(Error::TooManyObjects {
                    location: self.url.clone(),
                    max: MAX_LISTED,
                });
            }
        }
        Ok(out)
    }

    /// Reads a small object whole, refusing objects over `max` bytes.
    pub async fn read_small(&self, key: &str, max: usize) -> Result<Vec<u8>> {
        let r = self
            .inner
            .get(&Path::from(key))
            .await
            .map_err(Self::serr(key))?;
        if r.meta.size > max as u64 {
            return Err(Error::ObjectTooLarge {
                key: key.to_string(),
                size: r.meta.size,
                max,
            });
        }
        let b = r.bytes().await.map_err(Self::serr(key))?;
        Ok(b.to_vec())
    }

    /// Opens an object as a buffered byte stream.
    pub(crate) async fn reader(&self, key: &str) -> Result<BoxBufRead> {
        let r = self
            .inner
            .get(&Path::from(key))
            .await
            .map_err(Self::serr(key))?;
        let s = r.into_stream().map_err(std::io::Error::other);
        Ok(Box::pin(StreamReader::new(s)))
    }

    /// Writes an object.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        self.inner
            .put(&Path::from(key), PutPayload::from(body))
            .await
            .map_err(Self::serr(key))?;
        Ok(())
    }

    /// Deletes an object (absent objects are not an error).
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Store {
                location: key.to_string(),
                source: e,
            }),
        }
    }
}

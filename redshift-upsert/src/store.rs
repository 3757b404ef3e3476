//! The object store being watched: `file://` or `s3://` (any S3 API server), reading objects
//! as streams and small objects (manifests) whole.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use tokio_util::io::StreamReader;

use crate::error::{Error, Result};
use crate::records::BoxBufRead;

/// The most objects one listing may return (bounds memory per poll).
pub const MAX_LISTED: usize = 1_000_000;

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
    /// Opens `file:///path` or `s3://bucket[/prefix]`. For S3, credentials and region come
    /// from the usual `AWS_*` variables; `endpoint` (e.g. a local S3 API server) switches to
    /// path-style requests and allows plain HTTP; without `AWS_ACCESS_KEY_ID` requests to such
    /// an endpoint are signed with a placeholder key pair (what local S3 API servers accept).
    pub fn open(url: &str, endpoint: Option<&str>) -> Result<Store> {
        let cfg = |m: &str| Error::Config(format!("--store {url}: {m}"));
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(cfg("file:// needs an absolute path"));
            }
            std::fs::create_dir_all(path).map_err(|source| Error::Io {
                path: path.into(),
                source,
            })?;
            let fs =
                object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|source| {
                    Error::Store {
                        location: url.to_string(),
                        source,
                    }
                })?;
            return Ok(Store {
                inner: Arc::new(fs),
                prefix: String::new(),
                s3_base: None,
                url: url.to_string(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(cfg("s3:// needs a bucket"));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Some(ep) = endpoint {
                b = b
                    .with_endpoint(ep)
                    .with_allow_http(true)
                    .with_virtual_hosted_style_request(false);
                if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                    // Local S3 API servers (moto, s3s-fs) accept any key pair.
                    b = b
                        .with_access_key_id("blueshift-local")
                        .with_secret_access_key("blueshift-local");
                }
                if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    b = b.with_region("us-east-1");
                }
            }
            let s3 = b.build().map_err(|source| Error::Store {
                location: url.to_string(),
                source,
            })?;
            return Ok(Store {
                inner: Arc::new(s3),
                prefix: prefix.trim_matches('/').to_string(),
                s3_base: Some(format!("s3://{bucket}")),
                url: url.to_string(),
            });
        }
        Err(cfg("expected file:///PATH or s3://BUCKET[/PREFIX]"))
    }

    fn serr(key: &str) -> impl FnOnce(object_store::Error) -> Error + '_ {
        move |source| Error::Store {
            location: key.to_string(),
            source,
        }
    }

    /// Every object under the watched prefix (at most [`MAX_LISTED`]).
    pub async fn list(&self) -> Result<Vec<ObjectMeta>> {
        let prefix = (!self.prefix.is_empty()).then(|| Path::from(self.prefix.as_str()));
        let mut s = self.inner.list(prefix.as_ref());
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            out.push(m.map_err(Self::serr(&self.prefix))?);
            if out.len() > MAX_LISTED {
                return Err(Error::Config(format!(
                    "more than {MAX_LISTED} objects under {}: narrow the prefix",
                    self.url
                )));
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
            return Err(Error::Config(format!(
                "{key}: {} bytes, more than the {max} allowed",
                r.meta.size
            )));
        }
        let b = r.bytes().await.map_err(Self::serr(key))?;
        Ok(b.to_vec())
    }

    /// Opens an object as a buffered byte stream.
    pub async fn reader(&self, key: &str) -> Result<BoxBufRead> {
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

//! Object storage from a URL (feature `store`): the one way every binary opens a store.
//!
//! | URL | store |
//! |---|---|
//! | `s3://BUCKET[/PREFIX]` | S3 or any S3 API server; `AWS_*` variables, then `--store-option`s |
//! | `az://CONTAINER[/PREFIX]` (or `azure://`) | Azure Blob Storage or Azurite; `AZURE_*` variables, then `--store-option`s |
//! | `file:///ABSOLUTE/PATH`, or a plain path | a local directory (created when missing) |
//! | `memory:///` | in memory (tests) |
//!
//! Options are the `object_store` configuration keys of the store: S3's (`aws_endpoint`,
//! `aws_region`, `aws_access_key_id`, `aws_allow_http`, `aws_conditional_put`, ...;
//! `endpoint`, `region` without the `aws_` prefix work too), Azure's
//! (`azure_storage_account_name`, `azure_storage_account_key`, `azure_storage_use_emulator`
//! for Azurite, ...). For an `http://` endpoint plain HTTP is
//! allowed; for an endpoint on the loopback interface (a local S3 API server such as moto or
//! s3s-fs) without credentials anywhere, requests are signed with a placeholder key pair,
//! which such servers accept.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use object_store::ObjectStoreExt;
//! let dir = tempfile::tempdir()?;
//! let url = format!("file://{}/archive", dir.path().display());
//! let opened = lifecycle::store::open(&url, &[])?;
//! opened.store.put(&opened.key("a/b.txt"), "hi".into()).await?;
//! assert!(dir.path().join("archive/a/b.txt").exists());
//! # Ok(())
//! # }
//! ```

use std::str::FromStr;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::path::Path;

use crate::error::Error;

/// The `--store-option KEY=VALUE` flag (repeatable), for binaries to flatten next to the flag
/// that names their store URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct StoreOptions {
    /// An object-store option, e.g. `aws_endpoint=http://127.0.0.1:9000` or
    /// `aws_region=eu-west-1` (repeatable; the `AWS_*` variables are read too).
    #[arg(long = "store-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub store_options: Vec<(String, String)>,
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => {
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        }
        _ => Err(format!("{s:?}: expected KEY=VALUE")),
    }
}

/// An opened store and where in it the URL points.
#[derive(Debug, Clone)]
pub struct OpenedStore {
    /// The store; keys are relative to the bucket or the local directory.
    pub store: Arc<dyn ObjectStore>,
    /// The URL's prefix within the store (empty for `file://` and `memory://`).
    pub prefix: Path,
    /// The bucket, for `s3://` URLs (what Redshift's COPY needs to name the objects).
    pub s3_bucket: Option<String>,
    /// Which kind of store it is.
    pub kind: StoreKind,
    /// The URL as given.
    pub url: String,
}

/// The kind of an [`OpenedStore`], for what differs between stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreKind {
    /// S3 or an S3 API server.
    S3,
    /// Azure Blob Storage or Azurite.
    Azure,
    /// A local directory.
    Local,
    /// In memory.
    Memory,
}

impl StoreKind {
    /// Whether the store keeps user metadata with an object.
    pub fn keeps_metadata(self) -> bool {
        matches!(self, StoreKind::S3 | StoreKind::Azure)
    }

    /// A user-metadata name as the store accepts it: Azure's must be C# identifiers
    /// (`bifrost-records` becomes `bifrost_records`); S3 takes it as it is.
    pub fn metadata_name(self, name: &str) -> String {
        match self {
            StoreKind::Azure => name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            _ => name.to_string(),
        }
    }
}

impl OpenedStore {
    /// The key of `relative` under the URL's prefix.
    pub fn key(&self, relative: &str) -> Path {
        let rel = relative.trim_matches('/');
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else if rel.is_empty() {
            self.prefix.clone()
        } else {
            Path::from(format!("{}/{rel}", self.prefix))
        }
    }
}

/// Opens the store a URL names, with `options` applied after the `AWS_*` variables.
///
/// # Errors
/// A malformed URL, an unsupported scheme, an option the store does not know, a local
/// directory that cannot be created, or a configuration the client refuses.
pub fn open(url: &str, options: &[(String, String)]) -> Result<OpenedStore, Error> {
    let bad = |message: &str| Error::StoreUrl {
        url: url.to_string(),
        message: message.to_string(),
    };
    let local = |path: &str| -> Result<OpenedStore, Error> {
        if let Some((k, _)) = options.first() {
            return Err(Error::StoreOption {
                url: url.to_string(),
                option: k.clone(),
                message: "local directories take no options".into(),
            });
        }
        std::fs::create_dir_all(path).map_err(|source| Error::StoreDirectory {
            url: url.to_string(),
            path: path.into(),
            source,
        })?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|source| {
            Error::Store {
                url: url.to_string(),
                source,
            }
        })?;
        Ok(OpenedStore {
            store: Arc::new(fs),
            prefix: Path::default(),
            s3_bucket: None,
            kind: StoreKind::Local,
            url: url.to_string(),
        })
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        if url.is_empty() {
            return Err(bad(
                "empty; expected s3://BUCKET[/PREFIX], file:///PATH or a directory",
            ));
        }
        return local(url);
    };
    match scheme {
        "file" => {
            if !rest.starts_with('/') {
                return Err(bad("file:// needs an absolute path (file:///var/data)"));
            }
            local(rest)
        }
        "memory" => Ok(OpenedStore {
            store: Arc::new(object_store::memory::InMemory::new()),
            prefix: Path::default(),
            s3_bucket: None,
            kind: StoreKind::Memory,
            url: url.to_string(),
        }),
        "s3" | "s3a" => open_s3(url, rest, options),
        "az" | "azure" => open_azure(url, rest, options),
        _ => Err(bad(
            "unsupported scheme; expected s3://, az://, file://, memory:// or a directory",
        )),
    }
}

fn open_s3(url: &str, rest: &str, options: &[(String, String)]) -> Result<OpenedStore, Error> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(Error::StoreUrl {
            url: url.to_string(),
            message: "s3:// needs a bucket".into(),
        });
    }
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    for (k, v) in options {
        let key = AmazonS3ConfigKey::from_str(k).map_err(|e| Error::StoreOption {
            url: url.to_string(),
            option: format!("{k}={v}"),
            message: e.to_string(),
        })?;
        b = b.with_config(key, v);
    }
    if let Some(endpoint) = b.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        // An http:// endpoint is unusable without plain HTTP: naming one is the consent.
        if endpoint.starts_with("http://") {
            b = b.with_allow_http(true);
        }
        let has_credentials = b
            .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
            .is_some_and(|k| !k.is_empty())
            || b.get_config_value(&AmazonS3ConfigKey::SkipSignature)
                .is_some_and(|v| v == "true");
        if !has_credentials && is_loopback(&endpoint) {
            b = b
                .with_access_key_id("local-s3-server")
                .with_secret_access_key("local-s3-server");
        }
    }
    let prefix = prefix.trim_matches('/');
    let s3 = b.build().map_err(|source| Error::Store {
        url: url.to_string(),
        source,
    })?;
    Ok(OpenedStore {
        store: Arc::new(s3),
        prefix: Path::from(prefix),
        s3_bucket: Some(bucket.to_string()),
        kind: StoreKind::S3,
        url: url.to_string(),
    })
}

fn open_azure(url: &str, rest: &str, options: &[(String, String)]) -> Result<OpenedStore, Error> {
    let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if container.is_empty() {
        return Err(Error::StoreUrl {
            url: url.to_string(),
            message: "az:// needs a container".into(),
        });
    }
    let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container);
    for (k, v) in options {
        let key = AzureConfigKey::from_str(k).map_err(|e| Error::StoreOption {
            url: url.to_string(),
            option: format!("{k}={v}"),
            message: e.to_string(),
        })?;
        b = b.with_config(key, v);
    }
    let azure = b.build().map_err(|source| Error::Store {
        url: url.to_string(),
        source,
    })?;
    Ok(OpenedStore {
        store: Arc::new(azure),
        prefix: Path::from(prefix.trim_matches('/')),
        s3_bucket: None,
        kind: StoreKind::Azure,
        url: url.to_string(),
    })
}

/// Whether an endpoint URL's host is the loopback interface.
fn is_loopback(endpoint: &str) -> bool {
    let Ok(u) = url::Url::parse(endpoint) else {
        return false;
    };
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_options_are_checked() {
        let e = open("ftp://x/y", &[]).unwrap_err().to_string();
        assert!(
            e.contains("ftp://x/y") && e.contains("unsupported scheme"),
            "{e}"
        );
        let e = open("s3:///p", &[]).unwrap_err().to_string();
        assert!(e.contains("needs a bucket"), "{e}");
        let e = open("file://relative/p", &[]).unwrap_err().to_string();
        assert!(e.contains("absolute path"), "{e}");
        let opt = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let e = open("s3://b/p", &opt("aws_no_such_thing", "1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("aws_no_such_thing=1"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d");
        let e = open(path.to_str().unwrap(), &opt("region", "x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("take no options"), "{e}");
        assert!(!path.exists(), "a refused store creates nothing");
    }

    #[test]
    fn s3_urls_keep_bucket_and_prefix() {
        let o = open(
            "s3://bucket/some/prefix/",
            &[("aws_endpoint".into(), "http://127.0.0.1:1".into())],
        )
        .unwrap();
        assert_eq!(o.s3_bucket.as_deref(), Some("bucket"));
        assert_eq!(o.prefix.as_ref(), "some/prefix");
        assert_eq!(o.key("x/y.gz").as_ref(), "some/prefix/x/y.gz");
    }

    #[test]
    fn azure_urls_keep_container_and_prefix() {
        let e = open("az:///p", &[]).unwrap_err().to_string();
        assert!(e.contains("needs a container"), "{e}");
        let opts = |extra: (&str, &str)| {
            vec![
                ("azure_storage_account_name".into(), "acct".into()),
                ("azure_storage_account_key".into(), "a2V5".into()),
                (extra.0.to_string(), extra.1.to_string()),
            ]
        };
        let e = open("az://c/p", &opts(("azure_no_such_thing", "1")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("azure_no_such_thing=1"), "{e}");
        let o = open(
            "azure://c/some/prefix/",
            &opts(("azure_allow_http", "true")),
        )
        .unwrap();
        assert_eq!(o.kind, StoreKind::Azure);
        assert_eq!(o.key("x").as_ref(), "some/prefix/x");
        assert_eq!(
            o.kind.metadata_name("bifrost-first-offset"),
            "bifrost_first_offset"
        );
        assert_eq!(
            StoreKind::S3.metadata_name("bifrost-first-offset"),
            "bifrost-first-offset"
        );
    }

    #[test]
    fn loopback_endpoints_only() {
        assert!(is_loopback("http://127.0.0.1:5000"));
        assert!(is_loopback("http://localhost:5000"));
        assert!(is_loopback("http://[::1]:5000"));
        assert!(!is_loopback("https://s3.eu-west-1.amazonaws.com"));
        assert!(!is_loopback("http://10.0.0.1:9000"));
    }

    #[test]
    fn option_flags_parse() {
        assert_eq!(
            parse_option(" AWS_Region = eu-west-1 "),
            Ok(("aws_region".into(), "eu-west-1".into()))
        );
        assert!(parse_option("novalue").is_err());
        assert!(parse_option("=x").is_err());
    }
}

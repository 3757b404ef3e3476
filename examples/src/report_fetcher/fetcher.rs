//! The report state machine: `downloadable -> transformable -> uploadable -> completed`.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, PutOptions, PutPayload};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use state_machine::{Machine, StepError, Transition};

use super::convert::{RawReport, convert, date_of, object_key};

/// Where a report is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportState {
    /// To download from the API.
    Downloadable {
        /// The client.
        client: u32,
        /// The day index.
        day: u32,
    },
    /// Downloaded, to convert.
    Transformable {
        /// The client.
        client: u32,
        /// The day index.
        day: u32,
        /// The report as downloaded.
        raw: RawReport,
    },
    /// Converted, to upload.
    Uploadable {
        /// The client.
        client: u32,
        /// The day index.
        day: u32,
        /// The object key below the output prefix.
        key: String,
        /// The converted report (JSON).
        body: String,
    },
}

impl ReportState {
    /// The state's name in logs, metrics and the journal.
    pub fn name(&self) -> &'static str {
        match self {
            ReportState::Downloadable { .. } => "download",
            ReportState::Transformable { .. } => "transform",
            ReportState::Uploadable { .. } => "upload",
        }
    }
}

/// The unit id of `(client, day)`.
pub fn unit_id(client: u32, day: u32) -> String {
    format!("client={client:05}/date={}", date_of(day))
}

/// Downloads with reqwest, converts, uploads with object_store. Every step is idempotent:
/// a download is a GET, a conversion is pure, an upload overwrites the same key.
pub struct Fetcher {
    http: reqwest::Client,
    api: String,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl Fetcher {
    /// A fetcher downloading from `api` (base URL) and uploading below `prefix` in `store`.
    pub fn new(api: String, store: Arc<dyn ObjectStore>, prefix: Path) -> anyhow::Result<Fetcher> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Fetcher {
            http,
            api,
            store,
            prefix,
        })
    }

    /// The object path of a key below the prefix.
    pub fn location(&self, key: &str) -> Path {
        join(&self.prefix, key)
    }

    async fn download(&self, client: u32, day: u32) -> Result<RawReport, StepError> {
        let url = format!("{}/clients/{client}/reports/{}", self.api, date_of(day));
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| StepError::transient(format!("GET {url}: {e}")))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let wait = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64);
            return Err(match wait {
                Some(wait) => StepError::retry_after(format!("GET {url}: {status}"), wait),
                None => StepError::transient(format!("GET {url}: {status}")),
            });
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Err(StepError::transient(format!("GET {url}: {status}")));
        }
        if !status.is_success() {
            return Err(StepError::permanent(format!("GET {url}: {status}")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| StepError::transient(format!("GET {url}: reading the body: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| StepError::permanent(format!("GET {url}: not a report: {e}")))
    }

    async fn upload(&self, key: &str, body: &str) -> Result<(), StepError> {
        let location = self.location(key);
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(body.as_bytes()));
        match self
            .store
            .put_opts(&location, payload, PutOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let message = format!("put {location}: {e}");
                Err(if is_permanent(&e) {
                    StepError::permanent(message)
                } else {
                    StepError::transient(message)
                })
            }
        }
    }
}

/// `key` below `prefix`.
pub fn join(prefix: &Path, key: &str) -> Path {
    if prefix.as_ref().is_empty() {
        Path::from(key)
    } else {
        Path::from(format!("{prefix}/{key}"))
    }
}

fn is_permanent(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    matches!(
        e,
        E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::UnknownConfigurationKey { .. }
    )
}

impl Machine for Fetcher {
    type State = ReportState;

    fn state_name(&self, state: &ReportState) -> &'static str {
        state.name()
    }

    async fn step(
        &self,
        _id: &str,
        state: &ReportState,
    ) -> Result<Transition<ReportState>, StepError> {
        match state {
            ReportState::Downloadable { client, day } => {
                let raw = self.download(*client, *day).await?;
                Ok(Transition::Next(ReportState::Transformable {
                    client: *client,
                    day: *day,
                    raw,
                }))
            }
            ReportState::Transformable { client, day, raw } => {
                let report = convert(raw).map_err(StepError::permanent)?;
                let body = serde_json::to_string(&report)
                    .map_err(|e| StepError::permanent(format!("encoding the report: {e}")))?;
                Ok(Transition::Next(ReportState::Uploadable {
                    client: *client,
                    day: *day,
                    key: object_key(*client, *day),
                    body,
                }))
            }
            ReportState::Uploadable { key, body, .. } => {
                self.upload(key, body).await?;
                Ok(Transition::Completed)
            }
        }
    }
}

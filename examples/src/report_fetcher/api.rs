//! The reporting API the fetcher downloads from: a real HTTP server (axum) on 127.0.0.1 with
//! configurable latency, `429 Too Many Requests` carrying `Retry-After`, random `503`s and
//! reports that are gone (`404`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::oneshot;

use super::convert::{FIRST_DAY, date_of, days_from_civil, is_gone, raw_report};

/// How the API behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiConfig {
    /// Time spent on each request before answering.
    pub latency: Duration,
    /// Fraction of requests answered `503 Service Unavailable`.
    pub failure_rate: f64,
    /// Fraction of requests answered `429 Too Many Requests` with `Retry-After`.
    pub throttle_rate: f64,
    /// The `Retry-After` sent with a 429 (seconds; fractional values are sent as decimals).
    pub retry_after: Duration,
    /// Fraction of (client, day) reports that do not exist (`404`), see
    /// [`super::convert::is_gone`].
    pub gone_rate: f64,
}

/// What the API answered so far.
#[derive(Debug, Default)]
pub struct ApiCounters {
    /// Requests received.
    pub requests: AtomicU64,
    /// `200 OK` answers.
    pub served: AtomicU64,
    /// `429` answers.
    pub throttled: AtomicU64,
    /// `503` answers.
    pub failed: AtomicU64,
    /// `404` answers.
    pub gone: AtomicU64,
}

struct Shared {
    config: ApiConfig,
    counters: Arc<ApiCounters>,
}

/// A running API; stops when dropped or [`stop`](Api::stop)ped.
pub struct Api {
    addr: SocketAddr,
    counters: Arc<ApiCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Api {
    /// Starts the API on a random port of 127.0.0.1.
    pub async fn start(config: ApiConfig) -> anyhow::Result<Api> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the reporting API to 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(ApiCounters::default());
        let app = Router::new()
            .route("/clients/{client}/reports/{date}", get(report))
            .with_state(Arc::new(Shared {
                config,
                counters: counters.clone(),
            }));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "reporting API failed");
            }
        });
        Ok(Api {
            addr,
            counters,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the API answered so far.
    pub fn counters(&self) -> &ApiCounters {
        &self.counters
    }

    /// Stops accepting, finishes open requests.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The day index of `date` (`YYYY-MM-DD`), if it is a valid date on or after the first day.
pub fn day_of(date: &str) -> Option<u32> {
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (fy, fm, fd) = FIRST_DAY;
    let day = u32::try_from(days_from_civil(y, m, d) - days_from_civil(fy, fm, fd)).ok()?;
    // Rejects dates such as 2026-02-31 that the arithmetic would roll over.
    (date_of(day) == date).then_some(day)
}

async fn report(
    State(shared): State<Arc<Shared>>,
    Path((client, date)): Path<(u32, String)>,
) -> Response {
    let c = &shared.counters;
    let config = &shared.config;
    c.requests.fetch_add(1, Ordering::Relaxed);
    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    let Some(day) = day_of(&date) else {
        return (StatusCode::BAD_REQUEST, format!("bad date {date:?}\n")).into_response();
    };
    let roll = fastrand::f64();
    if roll < config.throttle_rate {
        c.throttled.fetch_add(1, Ordering::Relaxed);
        let secs = config.retry_after.as_secs_f64();
        let value = if secs.fract() == 0.0 {
            format!("{secs:.0}")
        } else {
            format!("{secs:.3}")
        };
        let mut response = (StatusCode::TOO_MANY_REQUESTS, "slow down\n").into_response();
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    if roll < config.throttle_rate + config.failure_rate {
        c.failed.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "try again\n").into_response();
    }
    if is_gone(client, day, config.gone_rate) {
        c.gone.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::NOT_FOUND, "no such report\n").into_response();
    }
    c.served.fetch_add(1, Ordering::Relaxed);
    axum::Json(raw_report(client, day)).into_response()
}

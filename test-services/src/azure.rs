//! Azure Blob Storage in tests: Azurite (`npm install -g azurite`), its well-known account,
//! and a container made for each test with a Shared Key signed `Create Container` request.

use std::io::{Read, Write};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The variable naming Azurite's blob endpoint with its account, as `.ci/run` starts it:
/// `http://127.0.0.1:10000/devstoreaccount1`.
pub const AZURE_BLOB: &str = "TEST_AZURE_BLOB";
/// Azurite's well-known account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known account key (published by Microsoft; it opens only local emulators).
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `object_store` options that reach the Azurite at `endpoint` (the value of
/// [`AZURE_BLOB`]) with the well-known account.
pub fn store_options(endpoint: &str) -> Vec<(String, String)> {
    [
        ("azure_storage_account_name", ACCOUNT),
        ("azure_storage_account_key", KEY),
        ("azure_storage_endpoint", endpoint.trim_end_matches('/')),
        ("azure_allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Creates a container named `<prefix><unique>` on the Azurite at `endpoint`
/// (`http://HOST:PORT/ACCOUNT`) and returns its name. Container names allow lower-case
/// letters, digits and `-`: `prefix` should keep to those.
///
/// # Panics
/// When the endpoint is malformed, cannot be reached within 10 s or does not answer `201`.
pub fn create_container(endpoint: &str, prefix: &str) -> String {
    let container = crate::unique_name(prefix)
        .replace('_', "-")
        .to_ascii_lowercase();
    let rest = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let (hostport, account) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("Azure endpoint {endpoint}: expected http://HOST:PORT/ACCOUNT"));
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let version = "2021-08-06";
    // Shared Key: the verb, eleven empty standard headers, the x-ms- headers, the resource.
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{account}/{account}/{container}\nrestype:container"
    );
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .expect("the well-known key is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let addr = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("Azure endpoint {endpoint}: not HOST:PORT"));
    let timeout = std::time::Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .unwrap_or_else(|e| panic!("Azure endpoint {endpoint}: {e}"));
    let _ = s.set_read_timeout(Some(timeout));
    let req = format!(
        "PUT /{account}/{container}?restype=container HTTP/1.1\r\nHost: {hostport}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {account}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("Azure endpoint {endpoint}: {e}"));
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let head = String::from_utf8_lossy(&resp[..resp.len().min(60)]).to_string();
    assert!(
        head.starts_with("HTTP/1.1 201"),
        "creating container {container} at {endpoint}: {head}"
    );
    container
}

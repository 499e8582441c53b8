//! TLS on `https` listeners: rustls (ring's crypto) terminates each connection in the worker
//! that accepted it, which then serves HTTP/1.1 on it like on any other (`worker::http`: the
//! refusals, `static-map`, drain on stop, the watchdog).
//!
//! The certificate chain and key are read by the generation's master as it starts, before it
//! imports the app and forks ([`load`]), never by the pool: a renewed certificate is served
//! from the next reload on, with nothing dropped, as the new generation reads the files while
//! the old one serves on with what it read. Files that cannot be read, hold no certificate or
//! no key, or whose key does not match the certificate fail the generation with a reason that
//! names the listener and the file; the pool rolls back and `zergctl reload` prints it.
//! Building a rustls `ServerConfig` starts no thread, so the master may still fork after it
//! (see `process`); each worker gets its copy, and its own session cache.
//!
//! A handshake is bounded by `header-timeout`, like the request head after it (a client that
//! connects and says nothing costs a socket, not a worker), and by [`IDLE_DRAIN_GRACE`](super::http::IDLE_DRAIN_GRACE) once
//! the worker stops.

use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use zerg::config::{Config, Protocol, TlsFiles};
use zerg::control::ListenerInfo;

use super::http::State;
use crate::wsgi::environ::{ConnEnv, Peer};

/// The TLS setup of each `https` listener of a generation, in manifest order.
#[derive(Clone, Default)]
pub struct Certs {
    by_listener: Vec<Option<TlsAcceptor>>,
}

impl Certs {
    /// The acceptor of the `index`th listener of the manifest, if it is an `https` one.
    pub fn acceptor(&self, index: usize) -> Option<TlsAcceptor> {
        self.by_listener.get(index).cloned().flatten()
    }
}

/// Reads the certificate and key of every `https` listener in `manifest`, as `config` (this
/// generation's) names them. The error is the operator's line: which listener, which file,
/// what is wrong with it.
pub fn load(config: &Config, manifest: &[ListenerInfo]) -> Result<Certs, String> {
    let by_listener = manifest
        .iter()
        .map(|info| {
            if info.protocol != Protocol::Https {
                return Ok(None);
            }
            let files = config.tls_files(&info.addr).ok_or_else(|| {
                format!(
                    "listener {} ({}): this config has no `https` entry for that address (the \
                     pool binds its listeners once: restart it to change them)",
                    info.name, info.addr
                )
            })?;
            let tls = server_config(&files)
                .map_err(|e| format!("listener {} ({}): {e}", info.name, info.addr))?;
            tracing::info!(
                listener = %info.name,
                cert = %files.cert.display(),
                "certificate loaded"
            );
            Ok(Some(TlsAcceptor::from(Arc::new(tls))))
        })
        .collect::<Result<_, String>>()?;
    Ok(Certs { by_listener })
}

/// A rustls server config for one certificate chain and its key.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let (cert, key) = (files.cert.display(), files.key.display());
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(&e, &format!("the certificate chain {cert}")))?;
    if chain.is_empty() {
        return Err(format!(
            "the certificate chain {cert} holds no certificate (a PEM `CERTIFICATE` block)"
        ));
    }
    let private = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "the key {key} holds no private key (a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or \
             `EC PRIVATE KEY` block)"
        ),
        e => pem_error(&e, &format!("the key {key}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("the key {key} does not match the certificate {cert}")
            }
            e => format!("the certificate {cert} with the key {key}: {e}"),
        })?;
    // What zerg speaks; a client that offers only h2 is told so in the handshake.
    tls.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(tls)
}

fn pem_error(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(io) => format!("cannot read {what}: {io}"),
        e => format!("{what} is not a PEM file: {e}"),
    }
}

/// Serves one accepted connection of an `https` listener: the handshake, then HTTP/1.1.
pub async fn serve<S>(
    io: S,
    acceptor: TlsAcceptor,
    peer: Peer,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tls =
        match super::opening::within(acceptor.accept(io), state.header_timeout, &mut stop).await {
            Some(Ok(tls)) => tls,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed; connection closed");
                return;
            }
            None => {
                tracing::debug!("no TLS handshake in time; connection closed");
                return;
            }
        };
    super::http::serve_connection(tls, Arc::new(ConnEnv::tls(peer)), state, stop).await;
}

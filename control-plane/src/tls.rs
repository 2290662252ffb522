//! HTTPS serving: the PEM files of `--tls-cert-file` / `--tls-private-key-file` become a
//! rustls server config, and a [`TlsListener`] hands finished TLS connections to axum.
//!
//! ```text
//! TcpListener ──accept──> task per connection: TLS handshake (bounded in time; with
//!                         --client-ca-file a client certificate, if sent, must chain
//!                         to that CA)
//!                                   └─ ok ──channel──> TlsListener::accept ──> axum::serve
//! ```
//!
//! ALPN offers `h2` and `http/1.1`; axum serves whichever the client picked (it tells
//! them apart by the HTTP/2 preface). Handshakes run in their own tasks, so a client that stalls mid-handshake delays no
//! one else; failed handshakes (a client that does not trust the CA) are logged and
//! dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no usable PEM object of the expected kind.
    #[error("{flag} {}: {reason}", path.display())]
    Parse {
        /// The flag that named the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Only one of the two flags was given.
    #[error("--tls-cert-file and --tls-private-key-file must be given together")]
    Incomplete,
    /// `--client-ca-file` without the TLS flags.
    #[error(
        "--client-ca-file needs --tls-cert-file and --tls-private-key-file (client certificates come with TLS)"
    )]
    ClientCaWithoutTls,
    /// rustls refused the pair (for example a key that does not match the certificate).
    #[error("--tls-cert-file {} with --tls-private-key-file {}: {reason}", cert.display(), key.display())]
    Pair {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

const CERT_FLAG: &str = "--tls-cert-file";
const CLIENT_CA_FLAG: &str = "--client-ca-file";
const KEY_FLAG: &str = "--tls-private-key-file";

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// The certificate chain in a PEM file, leaf first.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    certs_of(CERT_FLAG, path)
}

fn certs_of(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let parse = |reason: String| TlsError::Parse {
        flag,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(parse("holds no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The private key in a PEM file: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`)
/// or SEC1 (`EC PRIVATE KEY`).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(KEY_FLAG, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Parse {
        flag: KEY_FLAG,
        path: path.to_owned(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block".into()
            }
            e => format!("not a PEM private key file: {e}"),
        },
    })
}

/// The client-certificate verifier of `--client-ca-file`: certificates that chain to
/// one of its CAs are accepted; clients without one may still connect (and use a token
/// or anonymous access), as with kube-apiserver.
fn client_verifier(
    path: &Path,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs_of(CLIENT_CA_FLAG, path)? {
        roots.add(c).map_err(|e| TlsError::Parse {
            flag: CLIENT_CA_FLAG,
            path: path.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Parse {
            flag: CLIENT_CA_FLAG,
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// A rustls server config from the flags; `None` when no TLS file is given (plain
/// HTTP).
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (cert, key) = match (cert, key) {
        (None, None) if client_ca.is_some() => return Err(TlsError::ClientCaWithoutTls),
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TlsError::Incomplete),
    };
    let chain = load_certs(cert)?;
    let private = load_key(key)?;
    let pair = |reason: String| TlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| pair(e.to_string()))?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, private)
        .map_err(|e| pair(e.to_string()))?;
    // HTTP/2 as kube-apiserver offers it (kubectl picks it), HTTP/1.1 for the rest.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// A listener whose connections have finished their TLS handshake.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts TCP connections on `tcp` and runs their handshakes with `config`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = async {
                        if speaks_plain_http(&stream).await {
                            refuse_plain_http(stream).await;
                            return Err(std::io::Error::other("plain HTTP on the HTTPS port"));
                        }
                        acceptor.accept(stream).await
                    };
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

/// Whether the client's first byte starts an HTTP request line (`GET ...`) rather
/// than a TLS handshake record (0x16).
async fn speaks_plain_http(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_uppercase())
}

/// Answers a plain HTTP request on the HTTPS port the way Go servers (kube-apiserver) do,
/// so `curl http://...` says what is wrong instead of failing obscurely.
async fn refuse_plain_http(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const REPLY: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";
    let _ = stream.write_all(REPLY).await;
    let _ = stream.shutdown().await;
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended only because this listener is gone; never reached
            // while the server runs, so wait forever rather than invent a connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skein-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn no_files_means_plain_http() {
        assert!(server_config(None, None, None).unwrap().is_none());
    }

    #[test]
    fn one_file_alone_is_refused() {
        let e = server_config(Some(Path::new("/x")), None, None).unwrap_err();
        assert!(matches!(e, TlsError::Incomplete), "{e}");
        let e = server_config(None, None, Some(Path::new("/ca"))).unwrap_err();
        assert!(matches!(e, TlsError::ClientCaWithoutTls), "{e}");
    }

    #[test]
    fn errors_name_the_file_and_the_flag() {
        let missing = Path::new("/nonexistent/skein/server.crt");
        let e = server_config(Some(missing), Some(missing), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("--tls-cert-file /nonexistent/skein/server.crt"),
            "{text}"
        );
        let garbage = tmp("garbage.pem", "this is not PEM\n");
        let text = load_certs(&garbage).unwrap_err().to_string();
        assert!(
            text.contains("--tls-cert-file") && text.contains("garbage.pem"),
            "{text}"
        );
        assert!(text.contains("no PEM CERTIFICATE"), "{text}");
        let text = load_key(&garbage).unwrap_err().to_string();
        assert!(
            text.contains("--tls-private-key-file") && text.contains("garbage.pem"),
            "{text}"
        );
        assert!(text.contains("PRIVATE KEY"), "{text}");
    }
}

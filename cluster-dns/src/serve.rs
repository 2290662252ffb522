//! Binds the listen address (UDP and TCP) and runs the hickory server on it.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::Error;
use crate::handler::ClusterHandler;

/// How long a TCP client may stay idle before its connection is closed.
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds UDP and TCP on `listen` and starts serving with `handler`. Both sockets are
/// bound before anything is served: a port in use fails here, naming the address.
pub async fn start(
    listen: SocketAddr,
    handler: ClusterHandler,
) -> Result<Server<ClusterHandler>, Error> {
    let udp = UdpSocket::bind(listen).await.map_err(|source| Error::Io {
        what: format!("bind udp {listen}"),
        source,
    })?;
    let tcp = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io {
            what: format!("bind tcp {listen}"),
            source,
        })?;
    let mut server = Server::new(handler);
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
    Ok(server)
}

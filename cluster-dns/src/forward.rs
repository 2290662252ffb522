//! Forwarding to the explicitly configured upstream: the client's query as it came,
//! over UDP, retried over TCP when the answer is truncated.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::Error;

/// Sends `query` (a whole DNS message) to `upstream` and returns its answer.
pub async fn exchange(
    upstream: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> Result<Message, Error> {
    let fail = |reason: String| Error::Upstream { upstream, reason };
    let reply = tokio::time::timeout(timeout, udp(upstream, query))
        .await
        .map_err(|_| fail(format!("no answer over UDP within {timeout:?}")))?
        .map_err(|e| fail(format!("udp: {e}")))?;
    let message = Message::from_vec(&reply).map_err(|e| fail(format!("bad answer: {e}")))?;
    if !message.metadata.truncation {
        return Ok(message);
    }
    let reply = tokio::time::timeout(timeout, tcp(upstream, query))
        .await
        .map_err(|_| fail(format!("no answer over TCP within {timeout:?}")))?
        .map_err(|e| fail(format!("tcp: {e}")))?;
    Message::from_vec(&reply).map_err(|e| fail(format!("bad answer: {e}")))
}

async fn udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Only the answer to this query (same id) counts; anything else is dropped.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::other("query longer than 65535 bytes"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

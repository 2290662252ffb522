//! Client-certificate authentication (`--client-ca-file`), as kube-apiserver does it:
//! a certificate that chains to the client CA (rustls checked it in the handshake)
//! authenticates its subject's CommonName as the user and its Organizations as the
//! groups. The identity travels from the connection to each request as axum
//! `ConnectInfo<Peer>`.
//!
//! ```text
//! TLS handshake (verifies the chain) ─> Peer{user: CN, groups: O..} per connection
//!   ─> every request on it: ConnectInfo<Peer> ─> auth: a user without a token
//! ```

use std::net::SocketAddr;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use crate::tls::TlsListener;

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The user of a verified client certificate.
    pub cert_user: Option<CertUser>,
}

/// The identity in a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertUser {
    /// Subject CommonName.
    pub name: String,
    /// Subject Organizations.
    pub groups: Vec<String>,
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        let cert_user = session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| subject(leaf));
        Peer {
            addr: *stream.remote_addr(),
            cert_user,
        }
    }
}

/// One DER TLV: (tag, contents, rest).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// id-at-commonName 2.5.4.3 and id-at-organizationName 2.5.4.10.
const CN: &[u8] = &[0x55, 0x04, 0x03];
const O: &[u8] = &[0x55, 0x04, 0x0a];

/// The CommonName and Organizations of a DER certificate's subject; `None` when the
/// certificate cannot be read or has no CommonName.
pub fn subject(der: &[u8]) -> Option<CertUser> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version is optional; then serial, signature algorithm, issuer, validity.
    let (tag, _, r) = tlv(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (SEQUENCE, mut name, _) = tlv(rest)? else {
        return None;
    };
    let (mut cn, mut groups) = (None, Vec::new());
    while !name.is_empty() {
        let (SET, mut rdn, r) = tlv(name)? else {
            return None;
        };
        name = r;
        while !rdn.is_empty() {
            let (SEQUENCE, atv, r) = tlv(rdn)? else {
                return None;
            };
            rdn = r;
            let (OID, oid, value) = tlv(atv)? else {
                return None;
            };
            let (_, text, _) = tlv(value)?;
            let text = String::from_utf8(text.to_vec()).ok()?;
            if oid == CN {
                cn = Some(text);
            } else if oid == O {
                groups.push(text);
            }
        }
    }
    Some(CertUser {
        name: cn.filter(|c| !c.is_empty())?,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if body.len() < 0x80 {
            v.push(body.len() as u8);
        } else {
            v.extend([0x82, (body.len() >> 8) as u8, body.len() as u8]);
        }
        v.extend_from_slice(body);
        v
    }

    fn atv(oid: &[u8], text: &str) -> Vec<u8> {
        der(
            SET,
            &der(
                SEQUENCE,
                &[der(OID, oid), der(0x0c, text.as_bytes())].concat(),
            ),
        )
    }

    /// A certificate skeleton with the fields `subject` walks past.
    fn cert(subject_name: &[u8]) -> Vec<u8> {
        let tbs = [
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[1; 20]),
            der(SEQUENCE, &der(OID, &[0x2a, 0x86, 0x48])),
            der(SEQUENCE, &atv(CN, "issuer-ca")),
            der(
                SEQUENCE,
                &[der(0x17, b"260101000000Z"), der(0x17, b"270101000000Z")].concat(),
            ),
            der(SEQUENCE, subject_name),
            der(SEQUENCE, &[0u8; 200]),
        ]
        .concat();
        der(SEQUENCE, &der(SEQUENCE, &tbs))
    }

    #[test]
    fn subject_common_name_and_organizations() {
        let name = [atv(O, "system:masters"), atv(O, "dev"), atv(CN, "admin")].concat();
        assert_eq!(
            subject(&cert(&name)),
            Some(CertUser {
                name: "admin".into(),
                groups: vec!["system:masters".into(), "dev".into()],
            })
        );
    }

    #[test]
    fn no_common_name_or_garbage_is_no_user() {
        assert_eq!(subject(&cert(&atv(O, "only-org"))), None);
        assert_eq!(subject(b"\x30\x05\x30"), None);
        assert_eq!(subject(&[]), None);
    }
}

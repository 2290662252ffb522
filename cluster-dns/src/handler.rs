//! The hickory request handler: a query in, the zone's answer (or the upstream's) out.
//!
//! | lookup                  | response                                              |
//! |-------------------------|-------------------------------------------------------|
//! | records                 | NOERROR, authoritative, the records                   |
//! | name without that type  | NOERROR, authoritative, empty, SOA in authority       |
//! | missing name in zone    | NXDOMAIN, authoritative, SOA in authority             |
//! | zone not loaded yet     | SERVFAIL (clients retry; nothing is cached)           |
//! | name outside the zone   | forwarded to `--upstream`, or NXDOMAIN without one    |

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward;
use crate::zone::{self, Answer, QueryType, RecordData, Zone};

/// A loaded zone and its SOA serial (bumped on every load).
type Versioned = (Arc<Zone>, u32);

/// The current zone, replaced whole on every change; `None` until the first load.
#[derive(Debug, Clone, Default)]
pub struct SharedZone(Arc<RwLock<Option<Versioned>>>);

impl SharedZone {
    /// Installs a new zone and bumps the SOA serial.
    pub fn set(&self, zone: Zone) {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        let serial = guard.as_ref().map_or(1, |(_, s)| s.wrapping_add(1));
        *guard = Some((Arc::new(zone), serial));
    }

    /// The current zone and its serial.
    pub fn get(&self) -> Option<Versioned> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Answers queries from the zone; forwards other names when an upstream is set.
#[derive(Debug, Clone)]
pub struct ClusterHandler {
    zone: SharedZone,
    domain: String,
    ttl: u32,
    upstream: Option<SocketAddr>,
    upstream_timeout: Duration,
}

impl ClusterHandler {
    /// A handler serving `domain` from `zone`, records with `ttl` seconds, forwarding
    /// names outside the domain to `upstream` when given.
    pub fn new(zone: SharedZone, domain: &str, ttl: u32, upstream: Option<SocketAddr>) -> Self {
        ClusterHandler {
            zone,
            domain: zone::normalize(domain),
            ttl,
            upstream,
            upstream_timeout: Duration::from_secs(2),
        }
    }

    fn soa(&self, serial: u32) -> Option<Record> {
        let apex = Name::from_ascii(format!("{}.", self.domain)).ok()?;
        let soa = SOA::new(
            Name::from_ascii(format!("ns.dns.{}.", self.domain)).ok()?,
            Name::from_ascii(format!("hostmaster.{}.", self.domain)).ok()?,
            serial,
            7200,
            1800,
            86400,
            self.ttl,
        );
        Some(Record::from_rdata(apex, self.ttl, RData::SOA(soa)))
    }

    fn to_wire(&self, rec: &zone::Record, qname: &Name) -> Option<Record> {
        // Echo the client's spelling of the name it asked for (0x20-style clients check).
        let name = if zone::normalize(&qname.to_ascii()) == rec.name {
            qname.clone()
        } else {
            fqdn(&rec.name)?
        };
        let rdata = match &rec.data {
            RecordData::A(ip) => RData::A(A(*ip)),
            RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            RecordData::Cname(t) => RData::CNAME(CNAME(fqdn(t)?)),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => RData::SRV(SRV::new(*priority, *weight, *port, fqdn(target)?)),
        };
        Some(Record::from_rdata(name, self.ttl, rdata))
    }

    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
        code: ResponseCode,
        authoritative: bool,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = code;
        metadata.authoritative = authoritative;
        metadata.recursion_available = self.upstream.is_some();
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let none: Vec<Record> = Vec::new();
        let response = builder.build(
            metadata,
            answers.iter(),
            authorities.iter(),
            none.iter(),
            none.iter(),
        );
        match handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, src = %request.src(), "send response");
                failed(request)
            }
        }
    }

    async fn forward<R: ResponseHandler>(
        &self,
        request: &Request,
        mut handle: R,
        upstream: SocketAddr,
    ) -> ResponseInfo {
        let reply =
            match forward::exchange(upstream, request.as_slice(), self.upstream_timeout).await {
                Ok(reply) => reply,
                Err(error) => {
                    tracing::warn!(%error, %upstream, "forward");
                    return self
                        .respond(
                            request,
                            handle,
                            ResponseCode::ServFail,
                            false,
                            vec![],
                            vec![],
                        )
                        .await;
                }
            };
        let mut metadata = reply.metadata;
        metadata.id = request.metadata.id;
        metadata.recursion_available = true;
        let edns = response_edns(request);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let response = builder.build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty::<&Record>(),
            reply.additionals.iter(),
        );
        match handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, src = %request.src(), "send response");
                failed(request)
            }
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        if request.metadata.op_code != OpCode::Query {
            return self
                .respond(request, handle, ResponseCode::NotImp, false, vec![], vec![])
                .await;
        }
        let Ok(info) = request.request_info() else {
            return self
                .respond(
                    request,
                    handle,
                    ResponseCode::FormErr,
                    false,
                    vec![],
                    vec![],
                )
                .await;
        };
        let qname: Name = info.query.original().name().clone();
        let qtype = info.query.query_type();
        let name = zone::normalize(&qname.to_ascii());

        if !zone::in_domain(&name, &self.domain) {
            return match self.upstream {
                Some(up) => self.forward(request, handle, up).await,
                None => {
                    self.respond(
                        request,
                        handle,
                        ResponseCode::NXDomain,
                        false,
                        vec![],
                        vec![],
                    )
                    .await
                }
            };
        }
        let Some((zone, serial)) = self.zone.get() else {
            return self
                .respond(
                    request,
                    handle,
                    ResponseCode::ServFail,
                    false,
                    vec![],
                    vec![],
                )
                .await;
        };
        let soa: Vec<Record> = self.soa(serial).into_iter().collect();
        if name == self.domain && matches!(qtype, RecordType::SOA | RecordType::ANY) {
            return self
                .respond(request, handle, ResponseCode::NoError, true, soa, vec![])
                .await;
        }
        match zone.lookup(&name, query_type(qtype)) {
            Answer::Records(records) => {
                let answers = records
                    .iter()
                    .filter_map(|r| self.to_wire(r, &qname))
                    .collect();
                self.respond(
                    request,
                    handle,
                    ResponseCode::NoError,
                    true,
                    answers,
                    vec![],
                )
                .await
            }
            Answer::NoData => {
                self.respond(request, handle, ResponseCode::NoError, true, vec![], soa)
                    .await
            }
            Answer::NxDomain => {
                self.respond(request, handle, ResponseCode::NXDomain, true, vec![], soa)
                    .await
            }
            Answer::NotInZone => {
                self.respond(
                    request,
                    handle,
                    ResponseCode::NXDomain,
                    false,
                    vec![],
                    vec![],
                )
                .await
            }
        }
    }
}

/// Maps a wire query type onto the zone's.
pub fn query_type(t: RecordType) -> QueryType {
    match t {
        RecordType::A => QueryType::A,
        RecordType::AAAA => QueryType::Aaaa,
        RecordType::CNAME => QueryType::Cname,
        RecordType::SRV => QueryType::Srv,
        RecordType::ANY => QueryType::Any,
        _ => QueryType::Other,
    }
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

/// An OPT record in the response when the query had one (RFC 6891 6.1.1).
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut edns = Edns::new();
        edns.set_max_payload(req.max_payload().max(512));
        edns.set_version(0);
        edns
    })
}

fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

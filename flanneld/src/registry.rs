//! The etcd side: the config key, the subnet leases, and a watch on them.
//!
//! A lease is created with one transaction: `if create_revision(key) == 0 then put(key,
//! value, lease = <new etcd lease with the TTL>)`, so two nodes never hold one subnet.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use ipnetwork::Ipv4Network;

use crate::Error;
use crate::lease::{self, LeaseAttrs, LeaseRecord};

fn etcd(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Error {
    let what = what.into();
    move |e| Error::Etcd {
        what,
        reason: e.to_string(),
    }
}

/// How to reach etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdSettings {
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// CA bundle to check the server with.
    pub ca_file: Option<PathBuf>,
    /// Client certificate.
    pub cert_file: Option<PathBuf>,
    /// Client key.
    pub key_file: Option<PathBuf>,
    /// etcd user name.
    pub username: Option<String>,
    /// etcd password.
    pub password: Option<String>,
}

/// A snapshot of every lease and the revision it was read at.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The leases (keys that parse; others are skipped with a warning).
    pub leases: Vec<LeaseRecord>,
    /// The etcd revision of the read.
    pub revision: i64,
}

/// A change to one subnet key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Created or updated.
    Put(LeaseRecord),
    /// Deleted or expired.
    Delete(Ipv4Network),
}

/// An etcd client bound to one key prefix.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Io {
        what: format!("read {}", path.display()),
        source,
    })
}

impl Registry {
    /// Connects (one attempt, bounded by a timeout).
    pub async fn connect(settings: &EtcdSettings, prefix: &str) -> Result<Registry, Error> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3));
        if let (Some(user), Some(pass)) = (&settings.username, &settings.password) {
            opts = opts.with_user(user.clone(), pass.clone());
        }
        if settings.ca_file.is_some() || settings.cert_file.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &settings.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_file(ca)?));
            }
            match (&settings.cert_file, &settings.key_file) {
                (Some(c), Some(k)) => {
                    tls = tls.identity(Identity::from_pem(read_file(c)?, read_file(k)?));
                }
                (None, None) => {}
                _ => {
                    return Err(Error::Usage(
                        "--etcd-certfile and --etcd-keyfile must be given together".into(),
                    ));
                }
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&settings.endpoints, Some(opts))
            .await
            .map_err(etcd(format!("connect to {}", settings.endpoints.join(","))))?;
        let mut reg = Registry {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
        };
        // The connection is lazy: a first read proves the endpoint answers.
        reg.client
            .get("health-probe", Some(GetOptions::new().with_count_only()))
            .await
            .map_err(etcd(format!("reach {}", settings.endpoints.join(","))))?;
        Ok(reg)
    }

    /// The key prefix (`/coreos.com/network`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The text of `<prefix>/config`, if the key exists.
    pub async fn config(&mut self) -> Result<Option<String>, Error> {
        let key = lease::config_key(&self.prefix);
        let resp = self
            .client
            .get(key.clone(), None)
            .await
            .map_err(etcd(format!("get {key}")))?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    /// Every lease under `<prefix>/subnets/`.
    pub async fn leases(&mut self) -> Result<Snapshot, Error> {
        let prefix = lease::subnets_prefix(&self.prefix);
        let resp = self
            .client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd(format!("list {prefix}")))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let leases = resp
            .kvs()
            .iter()
            .filter_map(|kv| self.record(kv.key(), kv.value(), kv.lease()))
            .collect();
        Ok(Snapshot { leases, revision })
    }

    fn record(&self, key: &[u8], value: &[u8], etcd_lease: i64) -> Option<LeaseRecord> {
        let key = String::from_utf8_lossy(key);
        let Some(subnet) = lease::parse_subnet_key(&self.prefix, &key) else {
            tracing::warn!(%key, "ignoring a key that is not <prefix>/subnets/<a.b.c.d>-<len>");
            return None;
        };
        match LeaseAttrs::from_json(value) {
            Ok(attrs) => Some(LeaseRecord {
                subnet,
                attrs,
                etcd_lease,
            }),
            Err(e) => {
                tracing::warn!(%key, error = %e, "ignoring a lease with a bad value");
                None
            }
        }
    }

    /// Creates the key for `subnet` if it is absent, attached to a new etcd lease of
    /// `ttl`. Returns the etcd lease id, or `None` when another node got there first.
    pub async fn create(
        &mut self,
        subnet: &Ipv4Network,
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Option<i64>, Error> {
        let key = lease::subnet_key(&self.prefix, subnet);
        let grant = self
            .client
            .lease_grant(ttl.as_secs() as i64, None)
            .await
            .map_err(etcd("grant etcd lease"))?;
        let id = grant.id();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                attrs.to_json(),
                Some(PutOptions::new().with_lease(id)),
            )]);
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(etcd(format!("create {key}")))?;
        if resp.succeeded() {
            Ok(Some(id))
        } else {
            let _ = self.client.lease_revoke(id).await;
            Ok(None)
        }
    }

    /// Rewrites this node's own key with `attrs`: a reservation stays without a TTL;
    /// otherwise the key moves to a new etcd lease of `ttl`. The write only happens if
    /// the key still names `attrs.public_ip`' (a node never overwrites another's lease).
    /// Returns the etcd lease id (0 for a reservation), or `None` when the key is gone
    /// or belongs to another node now.
    pub async fn refresh(
        &mut self,
        current: &LeaseRecord,
        attrs: &LeaseAttrs,
        ttl: Duration,
    ) -> Result<Option<i64>, Error> {
        let key = lease::subnet_key(&self.prefix, &current.subnet);
        let resp = self
            .client
            .get(key.clone(), None)
            .await
            .map_err(etcd(format!("get {key}")))?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let Some(now) = self.record(kv.key(), kv.value(), kv.lease()) else {
            return Ok(None);
        };
        if now.attrs.public_ip != attrs.public_ip {
            return Ok(None);
        }
        let (id, opts) = if now.is_reservation() {
            (0, None)
        } else {
            let grant = self
                .client
                .lease_grant(ttl.as_secs() as i64, None)
                .await
                .map_err(etcd("grant etcd lease"))?;
            (grant.id(), Some(PutOptions::new().with_lease(grant.id())))
        };
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                kv.mod_revision(),
            )])
            .and_then([TxnOp::put(key.clone(), attrs.to_json(), opts)]);
        let resp = self
            .client
            .txn(txn)
            .await
            .map_err(etcd(format!("refresh {key}")))?;
        if !resp.succeeded() {
            return Ok(None);
        }
        if !now.is_reservation() && now.etcd_lease != id && now.etcd_lease != 0 {
            // The old etcd lease holds nothing now; let it go.
            let _ = self.client.lease_revoke(now.etcd_lease).await;
        }
        Ok(Some(id))
    }

    /// Deletes a key (a stale lease of this node).
    pub async fn delete(&mut self, subnet: &Ipv4Network) -> Result<(), Error> {
        let key = lease::subnet_key(&self.prefix, subnet);
        self.client
            .delete(key.clone(), None)
            .await
            .map_err(etcd(format!("delete {key}")))?;
        Ok(())
    }

    /// Watches `<prefix>/subnets/` from `revision`.
    pub async fn watch(&mut self, revision: i64) -> Result<LeaseWatch, Error> {
        let prefix = lease::subnets_prefix(&self.prefix);
        let stream = self
            .client
            .watch(
                prefix.clone(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision)
                        .with_progress_notify(),
                ),
            )
            .await
            .map_err(etcd(format!("watch {prefix}")))?;
        Ok(LeaseWatch {
            stream,
            registry: self.clone(),
        })
    }
}

/// A watch on the leases.
#[derive(Debug)]
pub struct LeaseWatch {
    stream: WatchStream,
    registry: Registry,
}

impl LeaseWatch {
    /// The next batch of events; an error (or the end of the stream, or a cancel) means
    /// the watch is over and the caller relists.
    pub async fn next(&mut self) -> Result<Vec<LeaseEvent>, Error> {
        loop {
            let msg = self
                .stream
                .message()
                .await
                .map_err(etcd("watch subnets"))?
                .ok_or_else(|| Error::Etcd {
                    what: "watch subnets".into(),
                    reason: "stream ended".into(),
                })?;
            if msg.canceled() {
                return Err(Error::Etcd {
                    what: "watch subnets".into(),
                    reason: format!(
                        "canceled (compacted at {}): {}",
                        msg.compact_revision(),
                        msg.cancel_reason()
                    ),
                });
            }
            let mut out = Vec::new();
            for ev in msg.events() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    etcd_client::EventType::Put => {
                        if let Some(r) = self.registry.record(kv.key(), kv.value(), kv.lease()) {
                            out.push(LeaseEvent::Put(r));
                        }
                    }
                    etcd_client::EventType::Delete => {
                        let key = String::from_utf8_lossy(kv.key());
                        if let Some(s) = lease::parse_subnet_key(&self.registry.prefix, &key) {
                            out.push(LeaseEvent::Delete(s));
                        }
                    }
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }
}

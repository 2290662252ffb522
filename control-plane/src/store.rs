//! Objects in etcd: JSON values at `/registry/<resource>/<namespace>/<name>`, the
//! object's resourceVersion being the key's mod_revision. Writes are etcd transactions
//! guarded by create_revision (create) or mod_revision (update, delete), so concurrent
//! writers never overwrite each other.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};

/// The etcd-backed object store.
#[derive(Clone)]
pub struct Store {
    client: Client,
    /// Key prefix (`/registry`).
    pub prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Keys per etcd range request when listing.
const PAGE: i64 = 500;

/// One stored object with its key and revision.
#[derive(Debug, Clone)]
pub struct Stored {
    /// etcd key.
    pub key: String,
    /// The object, `metadata.resourceVersion` set from the mod_revision.
    pub obj: Value,
    /// The key's mod_revision.
    pub rev: i64,
}

/// A page of a list.
#[derive(Debug)]
pub struct Page {
    /// Objects in key order.
    pub items: Vec<Stored>,
    /// The etcd revision the page was read at.
    pub rev: i64,
    /// Whether more keys follow.
    pub more: bool,
}

/// Sets `metadata.resourceVersion` from an etcd revision.
pub fn set_rv(obj: &mut Value, rev: i64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::from(rev.to_string()));
    }
}

/// Decodes a stored value.
pub fn decode(key: &str, value: &[u8], rev: i64) -> ApiResult<Stored> {
    let mut obj: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::Internal(format!("stored object {key} is not JSON: {e}")))?;
    set_rv(&mut obj, rev);
    Ok(Stored {
        key: key.to_owned(),
        obj,
        rev,
    })
}

/// Encodes an object for storage (without its resourceVersion, which etcd gives).
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

/// The outcome of a guarded write.
#[derive(Debug)]
pub enum Write {
    /// Written at this revision.
    Done(i64),
    /// A compare failed; nothing was written.
    Failed,
}

impl Store {
    /// Connects to etcd.
    pub async fn connect(endpoints: &[String], prefix: &str) -> ApiResult<Store> {
        let client = Client::connect(endpoints, None).await?;
        Ok(Store {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
        })
    }

    /// The etcd client (for watches).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The current etcd revision.
    pub async fn revision(&self) -> ApiResult<i64> {
        let resp = self
            .client
            .kv_client()
            .get(
                format!("{}/", self.prefix),
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Reads one object.
    pub async fn get(&self, key: &str) -> ApiResult<Option<Stored>> {
        let resp = self.client.kv_client().get(key, None).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(decode(key, kv.value(), kv.mod_revision())?)),
            None => Ok(None),
        }
    }

    /// Reads up to `limit` objects (0: all) under `prefix`, starting at `start` (a key),
    /// at revision `rev` (0: current). Large reads are fetched in pages at one revision,
    /// so no single etcd response outgrows the gRPC message limit.
    pub async fn list(
        &self,
        prefix: &str,
        start: Option<&str>,
        rev: i64,
        limit: i64,
    ) -> ApiResult<Page> {
        let end = prefix_end(prefix);
        let mut from = start.unwrap_or(prefix).as_bytes().to_vec();
        let mut rev = rev;
        let mut items = Vec::new();
        loop {
            let want = if limit > 0 {
                (limit - items.len() as i64).min(PAGE)
            } else {
                PAGE
            };
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(want);
            if rev > 0 {
                opts = opts.with_revision(rev);
            }
            let resp = self
                .client
                .kv_client()
                .get(from.clone(), Some(opts))
                .await?;
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                items.push(decode(&key, kv.value(), kv.mod_revision())?);
            }
            let more = resp.more();
            let done = limit > 0 && items.len() as i64 >= limit;
            match resp.kvs().last() {
                Some(last) if more && !done => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(Page { items, rev, more }),
            }
        }
    }

    /// Runs a transaction: `ops` if every compare holds.
    pub async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> ApiResult<Write> {
        let resp = self
            .client
            .kv_client()
            .txn(Txn::new().when(compares).and_then(ops))
            .await?;
        if resp.succeeded() {
            Ok(Write::Done(resp.header().map_or(0, |h| h.revision())))
        } else {
            Ok(Write::Failed)
        }
    }

    /// Creates `key` if absent, together with `extra` keys that must also be absent
    /// (allocations), and `extra_ops`.
    pub async fn create(
        &self,
        key: &str,
        obj: &Value,
        absent: &[String],
        puts: &[(String, String)],
    ) -> ApiResult<Write> {
        let mut cmps = vec![Compare::create_revision(key, CompareOp::Equal, 0)];
        let mut ops = vec![TxnOp::put(key, encode(obj), None)];
        for k in absent {
            cmps.push(Compare::create_revision(k.as_str(), CompareOp::Equal, 0));
        }
        for (k, v) in puts {
            ops.push(TxnOp::put(k.as_str(), v.as_str(), None));
        }
        self.txn(cmps, ops).await
    }

    /// Replaces `key` if its mod_revision is still `rev`; claims `absent` keys and
    /// deletes `release` keys in the same transaction.
    pub async fn update(
        &self,
        key: &str,
        rev: i64,
        obj: &Value,
        absent: &[String],
        puts: &[(String, String)],
        release: &[String],
    ) -> ApiResult<Write> {
        let mut cmps = vec![Compare::mod_revision(key, CompareOp::Equal, rev)];
        let mut ops = vec![TxnOp::put(key, encode(obj), None)];
        for k in absent {
            cmps.push(Compare::create_revision(k.as_str(), CompareOp::Equal, 0));
        }
        for (k, v) in puts {
            ops.push(TxnOp::put(k.as_str(), v.as_str(), None));
        }
        for k in release {
            ops.push(TxnOp::delete(k.as_str(), None));
        }
        self.txn(cmps, ops).await
    }

    /// Deletes `key` if its mod_revision is still `rev`, with `release` keys.
    pub async fn delete(&self, key: &str, rev: i64, release: &[String]) -> ApiResult<Write> {
        let cmps = vec![Compare::mod_revision(key, CompareOp::Equal, rev)];
        let mut ops = vec![TxnOp::delete(key, None)];
        for k in release {
            ops.push(TxnOp::delete(k.as_str(), None));
        }
        self.txn(cmps, ops).await
    }

    /// Compacts etcd history up to `rev`.
    pub async fn compact(&self, rev: i64) -> ApiResult<()> {
        self.client.kv_client().compact(rev, None).await?;
        Ok(())
    }

    /// Keys (only) under a prefix.
    pub async fn keys(&self, prefix: &str) -> ApiResult<Vec<(String, String)>> {
        let resp = self
            .client
            .kv_client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect())
    }
}

/// The end of the key range holding every key that starts with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_the_prefix() {
        assert_eq!(prefix_end("/registry/pods/"), b"/registry/pods0".to_vec());
    }

    #[test]
    fn encode_drops_the_resource_version_and_decode_restores_it() {
        let obj = serde_json::json!({"metadata": {"name": "a", "resourceVersion": "7"}});
        let bytes = encode(&obj);
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let s = decode("/k", &bytes, 42).unwrap();
        assert_eq!(s.obj["metadata"]["resourceVersion"], "42");
    }
}

//! What happens after a delete: dependents found by ownerReferences are deleted
//! (Background, Foreground) or released (Orphan), and a terminating namespace is emptied
//! and then removed. Kubernetes runs these in the controller manager (garbage collector,
//! namespace controller); skein runs them in the API server until its controller
//! manager exists.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::app::App;
use crate::error::ApiResult;
use crate::objects::DeleteOptions;
use crate::registry::{self, RESOURCES};
use crate::request::Target;
use crate::store::Write;

fn owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

/// Deletes (or orphans) the dependents of the object with `uid` in namespace `ns`.
pub async fn cascade(app: &App, ns: Option<&str>, uid: &str, policy: &str) -> ApiResult<()> {
    if uid.is_empty() {
        return Ok(());
    }
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let Some(ns) = ns else { continue };
        let page = app
            .store
            .list(&res.scope_prefix(&app.store.prefix, Some(ns)), None, 0, 0)
            .await?;
        for item in page.items.into_iter().filter(|i| owned_by(&i.obj, uid)) {
            let name = item.obj["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if policy == "Orphan" {
                let mut o = item.obj.clone();
                if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"] != uid);
                }
                if let Write::Failed = app
                    .store
                    .update(&item.key, item.rev, &o, &[], &[], &[])
                    .await?
                {
                    tracing::debug!(
                        name,
                        "orphaning lost a race; the next writer keeps the reference"
                    );
                }
                continue;
            }
            let t = Target {
                res,
                namespace: Some(ns.to_owned()),
                name: Some(name.clone()),
                sub: None,
            };
            let opts = DeleteOptions {
                propagation: Some(policy.to_owned()),
                ..Default::default()
            };
            match Box::pin(app.delete(&t, &opts)).await {
                Ok(_) | Err(crate::error::ApiError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(resource = res.plural, name, error = %e, "deleting a dependent failed")
                }
            }
        }
    }
    Ok(())
}

/// Empties a terminating namespace, then deletes it. Runs until done (a pod bound to a
/// node waits for its node agent, as in Kubernetes).
pub async fn finish_namespace(app: Arc<App>, ns: String) {
    let Some(nsr) = registry::find("", "v1", "namespaces") else {
        return;
    };
    loop {
        let mut left = 0usize;
        for res in RESOURCES.iter().filter(|r| r.namespaced) {
            let prefix = res.scope_prefix(&app.store.prefix, Some(&ns));
            let page = match app.store.list(&prefix, None, 0, 0).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(namespace = ns, error = %e, "listing a terminating namespace failed");
                    left += 1;
                    continue;
                }
            };
            for item in page.items {
                left += 1;
                let t = Target {
                    res,
                    namespace: Some(ns.clone()),
                    name: item.obj["metadata"]["name"].as_str().map(str::to_owned),
                    sub: None,
                };
                if let Err(e) = app.delete(&t, &DeleteOptions::default()).await
                    && !matches!(e, crate::error::ApiError::NotFound { .. })
                {
                    tracing::debug!(namespace = ns, error = %e, "namespace cleanup: delete failed");
                }
            }
        }
        if left == 0 {
            let key = nsr.key(&app.store.prefix, None, &ns);
            match app.store.get(&key).await {
                Ok(Some(cur)) => {
                    if let Ok(Write::Done(_)) = app.store.delete(&key, cur.rev, &[]).await {
                        tracing::info!(namespace = ns, "namespace deleted");
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(namespace = ns, error = %e, "namespace cleanup"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Namespaces that must exist: `default`, `kube-system`, `kube-public`, and the
/// `kubernetes` Service with the range's first address.
pub async fn bootstrap(app: &Arc<App>) -> ApiResult<()> {
    let nsr = registry::find("", "v1", "namespaces").ok_or(crate::error::ApiError::NoSuchPath)?;
    let q = crate::request::Query::default();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let t = Target {
            res: nsr,
            namespace: None,
            name: None,
            sub: None,
        };
        match app
            .create(&t, json!({"metadata": {"name": ns}}), &q, &mut Vec::new())
            .await
        {
            Ok(_) | Err(crate::error::ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    // Resume namespaces that were terminating when the server stopped.
    let page = app
        .store
        .list(
            &format!("{}/", nsr.collection(&app.store.prefix)),
            None,
            0,
            0,
        )
        .await?;
    for item in page.items {
        if item.obj["status"]["phase"] == "Terminating"
            && let Some(name) = item.obj["metadata"]["name"].as_str()
        {
            tokio::spawn(finish_namespace(app.clone(), name.to_owned()));
        }
    }
    // Remember what is allocated.
    for (k, _) in app
        .store
        .keys(&format!("{}/ranges/serviceips/", app.store.prefix))
        .await?
    {
        if let Some(ip) = k.rsplit('/').next().and_then(|s| s.parse().ok()) {
            app.ranges.mark_ip(ip, true);
        }
    }
    for (k, _) in app
        .store
        .keys(&format!("{}/ranges/servicenodeports/", app.store.prefix))
        .await?
    {
        if let Some(p) = k.rsplit('/').next().and_then(|s| s.parse().ok()) {
            app.ranges.mark_port(p, true);
        }
    }
    let svc = registry::find("", "v1", "services").ok_or(crate::error::ApiError::NoSuchPath)?;
    let t = Target {
        res: svc,
        namespace: Some("default".into()),
        name: None,
        sub: None,
    };
    let body = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": app.ranges.first_ip().to_string(),
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": app.config.port}]},
    });
    match app.create(&t, body, &q, &mut Vec::new()).await {
        Ok(_) | Err(crate::error::ApiError::AlreadyExists { .. }) => {}
        Err(crate::error::ApiError::Invalid { causes, .. })
            if causes
                .iter()
                .any(|c| c.message.contains("already allocated")) =>
        {
            tracing::warn!(
                "the kubernetes Service's address {} is held by another Service",
                app.ranges.first_ip()
            );
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

//! The Kubernetes source: reflectors on Services and EndpointSlices (all namespaces);
//! after both have listed, every change rebuilds the zone and swaps it in whole.
//!
//! ```text
//! watch Services ──────► Store ─┐
//!                               ├─ notify ─► build_zone(stores) ─► SharedZone::set
//! watch EndpointSlices ► Store ─┘
//! ```

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::Error;
use crate::handler::SharedZone;
use crate::records::build_zone;

/// Watches the API server and keeps `zone` current. Returns only when a watch stream
/// ends (which the kube watcher never does on its own) or the stores' writers go away.
pub async fn run(client: Client, domain: String, zone: SharedZone) -> Result<(), Error> {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let changed = Arc::new(Notify::new());

    let svc_stream = reflector(
        services_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let eps_stream = reflector(
        slices_writer,
        watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    let drive_svc = drive(svc_stream, "services", changed.clone());
    let drive_eps = drive(eps_stream, "endpointslices", changed.clone());
    let rebuild = rebuild(services, slices, domain, zone, changed);
    tokio::select! {
        () = drive_svc => Err(Error::Watch("the Service watch ended".into())),
        () = drive_eps => Err(Error::Watch("the EndpointSlice watch ended".into())),
        r = rebuild => r,
    }
}

async fn drive<S, T>(stream: S, what: &'static str, changed: Arc<Notify>)
where
    S: futures::Stream<Item = Result<T, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(error) => tracing::warn!(%error, what, "watch (retrying with backoff)"),
        }
    }
}

async fn rebuild(
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    domain: String,
    zone: SharedZone,
    changed: Arc<Notify>,
) -> Result<(), Error> {
    let gone = |_| Error::Watch("a reflector store's writer was dropped".into());
    services.wait_until_ready().await.map_err(gone)?;
    slices.wait_until_ready().await.map_err(gone)?;
    tracing::info!("services and endpointslices listed; serving the zone");
    loop {
        let svc = services.state();
        let eps = slices.state();
        let built = build_zone(
            &domain,
            svc.iter().map(|s| s.as_ref()),
            eps.iter().map(|s| s.as_ref()),
        );
        for problem in &built.skipped {
            tracing::debug!(problem, "skipped");
        }
        tracing::debug!(
            services = svc.len(),
            endpointslices = eps.len(),
            names = built.zone.len(),
            "zone rebuilt"
        );
        zone.set(built.zone);
        changed.notified().await;
    }
}

//! `duo-operator run`: the controllers, leader election over a Lease, the metrics/health listener, JSON
//! logs and graceful shutdown.
//!
//! Only the replica holding the Lease reconciles; the others wait. On SIGTERM / SIGINT the controllers
//! finish the reconciliations in flight, the Lease is released, and the process exits 0.
//!
//! Cluster-wide by default; with `--watch-namespaces a,b` ([`Settings::scope`]) every watch and every
//! call is in those namespaces only (one watch per kind and namespace, merged as [`crate::scope`]
//! describes), and the permissions below are needed in those namespaces only: the chart then makes them
//! a Role + RoleBinding per namespace instead of a ClusterRole.
//!
//! # Permissions the operator needs (the chart's ClusterRole, or Role per watched namespace)
//!
//! | API group | Resources | Verbs | Why |
//! |---|---|---|---|
//! | `duo.beeldbeschikbaarheid.nl` | `duogateways` | get, list, watch, patch, update | reconcile; add/remove the finalizer |
//! | `duo.beeldbeschikbaarheid.nl` | `duogateways/status`, `mitzconnections/status` | patch | server-side apply of status |
//! | `duo.beeldbeschikbaarheid.nl` | `mitzconnections` | get, list, watch | reflector store, Mitz settings |
//! | `duo.beeldbeschikbaarheid.nl` | `duocommunities` | get, list, watch, create, patch, delete | select peers; publish each gateway |
//! | `""` | `secrets` | get, list, watch, create, patch, delete | TLS and Mitz certificates (list/watch metadata only, to re-reconcile on rotation); the operator-owned copies of the validated material |
//! | `""` | `configmaps` | get, list, watch, create, patch, delete | trust bundles (read), rendered config (owned) |
//! | `""` | `services`, `serviceaccounts` | get, create, patch, delete | children |
//! | `apps` | `deployments` | get, list, watch, create, patch, delete | children; status feeds Ready |
//! | `policy` | `poddisruptionbudgets` | get, create, patch, delete | child when replicas > 1 |
//! | `networking.k8s.io` | `networkpolicies` | get, create, patch, delete | child |
//! | `events.k8s.io` | `events` | create, patch | Warning events (certificate expiry, degraded) |
//! | `coordination.k8s.io` | `leases` (operator namespace only, a Role in both modes) | get, create, patch, update | leader election |
//!
//! Server-side apply of an object that does not exist yet needs `create` as well as `patch`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::utils::Predicate;
use kube::runtime::watcher;
use kube::runtime::{WatchStreamExt, predicates};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;

use crate::crd::{DuoCommunity, DuoGateway, MitzConnection};
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};
use crate::scope::Scope;

/// Settings of `duo-operator run`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listener for `/metrics`, `/healthz` and `/readyz`.
    pub metrics_addr: SocketAddr,
    /// Default gateway image.
    pub gateway_image: String,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// Seconds a Lease stays valid without renewal.
    pub lease_seconds: u64,
    /// Most reconciliations in parallel.
    pub concurrency: u16,
    /// Most gateways rolling out at once after the default gateway image changed (0: no cap).
    pub max_concurrent_rollouts: usize,
    /// The namespaces to watch and act in (`--watch-namespaces`; default every namespace).
    pub scope: Scope,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `stop` turns true.
///
/// With `tiny_http` on a thread of its own rather than an async HTTP server: three fixed plain-text
/// answers need no router, and the operator's dependency tree stays free of an HTTP server framework
/// (a check in `scripts/check-layers.sh`). A request waits at most 250 ms behind a stop.
async fn serve_ops(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let listener = listener.into_std()?;
    listener.set_nonblocking(false)?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("ops listener: {e}"))?;
    tokio::task::spawn_blocking(move || {
        let text = |body: String, status: u16, ct: &str| {
            let header =
                tiny_http::Header::from_bytes("Content-Type", ct).expect("a valid header literal");
            tiny_http::Response::from_string(body)
                .with_status_code(status)
                .with_header(header)
        };
        while !*stop.borrow() {
            let req = match server.recv_timeout(std::time::Duration::from_millis(250)) {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "ops listener");
                    continue;
                }
            };
            let path = req.url().split('?').next().unwrap_or("");
            let resp = match (req.method(), path) {
                (tiny_http::Method::Get, "/metrics") => text(
                    metrics.encode(),
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                (tiny_http::Method::Get, "/healthz") => text("ok".into(), 200, "text/plain"),
                (tiny_http::Method::Get, "/readyz") if ready.load(Ordering::Relaxed) => {
                    text("ok".into(), 200, "text/plain")
                }
                (tiny_http::Method::Get, "/readyz") => text("starting".into(), 503, "text/plain"),
                (tiny_http::Method::Get, _) => text("not found".into(), 404, "text/plain"),
                _ => text("method not allowed".into(), 405, "text/plain"),
            };
            if let Err(e) = req.respond(resp) {
                tracing::debug!(error = %e, "ops answer not sent");
            }
        }
    })
    .await?;
    Ok(())
}

/// Runs the DuoGateway and MitzConnection controllers until `stop` turns true, watching the
/// namespaces of [`Context::scope`].
pub async fn run_controllers(
    client: Client,
    ctx: Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
    concurrency: u16,
    writers: Writers,
) {
    let Writers {
        community_writer,
        mitz_writer,
    } = writers;
    let scope = ctx.scope.clone();
    let (gw_store, gw_writer) = reflector::store::<DuoGateway>();
    // status writes change neither generation, annotations (pause) nor finalizers: filtered out here
    let gw_stream = scope
        .watch::<DuoGateway>(&client, watcher::Config::default().any_semantic())
        .reflect(gw_writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::annotations)
                .combine(predicates::finalizers),
            Default::default(),
        );
    let community_stream = scope
        .watch::<DuoCommunity>(&client, watcher::Config::default().any_semantic())
        .reflect(community_writer)
        // no predicate filter: a deletion keeps the generation and must still reach the selecting gateways
        .touched_objects();
    let mitz_stream = scope
        .watch::<MitzConnection>(&client, watcher::Config::default().any_semantic())
        .reflect(mitz_writer)
        // unfiltered for the same reason; a MitzConnection status write only re-runs a no-op reconcile
        .touched_objects();
    let secrets = scope
        .watch_touched::<PartialObjectMeta<Secret>>(
            &client,
            watcher::Config::default().any_semantic(),
        )
        .predicate_filter(predicates::resource_version, Default::default());
    let config_maps = scope
        .watch_touched::<PartialObjectMeta<ConfigMap>>(
            &client,
            // the operator's own rendered ConfigMaps never hold a trust bundle
            watcher::Config::default()
                .labels("app.kubernetes.io/managed-by!=duo-operator")
                .any_semantic(),
        )
        .predicate_filter(predicates::resource_version, Default::default());

    let (s1, s2, s3, s4) = (
        gw_store.clone(),
        gw_store.clone(),
        gw_store.clone(),
        gw_store.clone(),
    );
    let (m1, m2) = (ctx.mitz.clone(), ctx.mitz.clone());
    let config = ControllerConfig::default()
        .concurrency(concurrency)
        .debounce(Duration::from_millis(300));
    let gateway_controller = Controller::for_stream(gw_stream, gw_store)
        .with_config(config.clone())
        .owns_stream(
            scope.watch_touched::<PartialObjectMeta<Deployment>>(
                &client,
                watcher::Config::default()
                    .labels("app.kubernetes.io/managed-by=duo-operator")
                    .any_semantic(),
            ),
        )
        .watches_stream(community_stream, move |c: DuoCommunity| {
            reconcile::gateways_selecting(&s1.state(), &c)
        })
        .watches_stream(mitz_stream, move |m: MitzConnection| {
            let ns = m.namespace().unwrap_or_default();
            let name = m.name_any();
            s2.state()
                .iter()
                .filter(|g| {
                    g.namespace().as_deref() == Some(ns.as_str())
                        && g.spec
                            .mitz
                            .as_ref()
                            .is_some_and(|r| r.connection_name == name)
                })
                .map(|g| ObjectRef::from_obj(g.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(secrets, move |s| {
            reconcile::gateways_referencing(
                &s3.state(),
                &m1,
                &s.namespace().unwrap_or_default(),
                &s.name_any(),
                true,
            )
        })
        .watches_stream(config_maps, move |c| {
            reconcile::gateways_referencing(
                &s4.state(),
                &m2,
                &c.namespace().unwrap_or_default(),
                &c.name_any(),
                false,
            )
        });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_all = async move {
        stop.await;
        let _ = stop_tx.send(true);
    };
    let stop_gw = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let stop_mitz = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let gateway_task = gateway_controller
        .graceful_shutdown_on(stop_gw)
        .run(
            reconcile::reconcile_gateway,
            reconcile::gateway_error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "DuoGateway controller");
            }
        });
    let mitz_secrets = scope
        .watch_touched::<PartialObjectMeta<Secret>>(
            &client,
            watcher::Config::default().any_semantic(),
        )
        .predicate_filter(predicates::resource_version, Default::default());
    // the controller's own store of MitzConnections (as Controller::new keeps one), fed per scope
    let (mitz_own_store, mitz_own_writer) = reflector::store::<MitzConnection>();
    let mitz_controller = Controller::for_stream(
        scope
            .watch::<MitzConnection>(&client, watcher::Config::default().any_semantic())
            .reflect(mitz_own_writer)
            .applied_objects(),
        mitz_own_store,
    )
    .with_config(config)
    .watches_stream(mitz_secrets, {
        let m = ctx.mitz.clone();
        move |s| {
            let ns = s.namespace().unwrap_or_default();
            let name = s.name_any();
            m.state()
                .iter()
                .filter(|c| {
                    c.namespace().as_deref() == Some(ns.as_str())
                        && (c.spec.client_certificate_secret_name == name
                            || c.spec
                                .trust_bundle
                                .secret
                                .as_ref()
                                .is_some_and(|k| k.name == name))
                })
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }
    })
    .graceful_shutdown_on(stop_mitz)
    .run(reconcile::reconcile_mitz, reconcile::mitz_error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "MitzConnection controller");
        }
    });
    tokio::join!(stop_all, gateway_task, mitz_controller);
}

/// Reflector writers whose stores live in the [`Context`].
pub struct Writers {
    /// Feeds [`Context::communities`].
    pub community_writer: reflector::store::Writer<DuoCommunity>,
    /// Feeds [`Context::mitz`].
    pub mitz_writer: reflector::store::Writer<MitzConnection>,
}

/// A context and the writers that fill its stores; [`run_controllers`] fills them from the namespaces
/// of `scope`.
pub fn context(
    client: Client,
    metrics: Arc<Metrics>,
    gateway_image: String,
    identity: &str,
    scope: Scope,
) -> (Arc<Context>, Writers) {
    let (communities, community_writer) = reflector::store::<DuoCommunity>();
    let (mitz, mitz_writer) = reflector::store::<MitzConnection>();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "duo-operator".into(),
            instance: Some(identity.to_owned()),
        },
    );
    let ctx = Context {
        client,
        metrics,
        recorder,
        gateway_image,
        communities,
        mitz,
        scope,
        applied: Default::default(),
        revocation: Default::default(),
        rollout_cap: reconcile::DEFAULT_MAX_CONCURRENT_ROLLOUTS.into(),
        rollouts: Default::default(),
    };
    (
        Arc::new(ctx),
        Writers {
            community_writer,
            mitz_writer,
        },
    )
}

/// Watches this replica's own Lease while it leads, and returns (an error saying why) once it can no
/// longer be sure to hold it: the Lease names another holder, or its last confirmed renewal plus its
/// duration is less than two checks away, for example because renewals fail with 401/403. The lease
/// manager keeps believing it leads in that case; this does not.
async fn lease_watchdog(
    client: Client,
    ns: &str,
    name: &str,
    identity: &str,
    lease_seconds: u64,
) -> anyhow::Error {
    use k8s_openapi::api::coordination::v1::Lease;
    let api: Api<Lease> = Api::namespaced(client, ns);
    // checked every 1/8 of the lease and given up 2 checks before expiry: the controllers are
    // dropped at once then, so they stop before another replica can take the Lease
    let every = Duration::from_millis((lease_seconds * 1000 / 8).max(250));
    let margin = every * 2;
    // just acquired: valid for one lease duration from now at least
    let mut valid_until = std::time::Instant::now() + Duration::from_secs(lease_seconds);
    loop {
        tokio::time::sleep(every).await;
        match api.get(name).await {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                let holder = spec.holder_identity.unwrap_or_default();
                if holder != identity {
                    return anyhow::anyhow!(
                        "Lease {ns}/{name} is held by {holder:?}, not by {identity:?}"
                    );
                }
                if let (Some(renewed), Some(secs)) = (spec.renew_time, spec.lease_duration_seconds)
                {
                    let expiry = renewed.0 + jiff::SignedDuration::from_secs(i64::from(secs));
                    let left = Duration::try_from(expiry.duration_since(jiff::Timestamp::now()))
                        .unwrap_or(Duration::ZERO);
                    valid_until = std::time::Instant::now() + left;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the leader-election Lease"),
        }
        if std::time::Instant::now() + margin >= valid_until {
            return anyhow::anyhow!(
                "Lease {ns}/{name} was not renewed before it expired; another replica may lead"
            );
        }
    }
}

/// Runs the operator: ops listener, leader election, controllers while leader; returns on SIGTERM/SIGINT.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // first: without /healthz and /readyz the operator must not run at all (the caller exits non-zero)
    let listener = tokio::net::TcpListener::bind(settings.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", settings.metrics_addr))?;
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let (ops_stop_tx, ops_stop_rx) = watch::channel(false);
    let ops = tokio::spawn(serve_ops(
        listener,
        metrics.clone(),
        ready.clone(),
        ops_stop_rx,
    ));

    let manager =
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &settings.lease_name)
            .with_namespace(&settings.lease_namespace)
            .with_identity(&settings.identity)
            .with_duration(settings.lease_seconds)
            .with_grace((settings.lease_seconds / 3).max(1))
            .build()
            .await?;
    let (mut leader, lease_task) = manager.watch().await;
    ready.store(true, Ordering::Relaxed);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tracing::info!(identity = %settings.identity, lease = %settings.lease_name, scope = %settings.scope, "waiting for leadership");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = leader.wait_for(|l| *l) => { if r.is_err() { anyhow::bail!("leader election stopped"); } }
        }
        tracing::info!("leader: starting controllers");
        metrics.leader.set(1);
        let (ctx, writers) = context(
            client.clone(),
            metrics.clone(),
            settings.gateway_image.clone(),
            &settings.identity,
            settings.scope.clone(),
        );
        ctx.rollout_cap
            .store(settings.max_concurrent_rollouts, Ordering::Relaxed);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let controllers = tokio::spawn(run_controllers(
            client.clone(),
            ctx,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
            settings.concurrency,
            writers,
        ));
        tokio::pin!(controllers);
        let watchdog = lease_watchdog(
            client.clone(),
            &settings.lease_namespace,
            &settings.lease_name,
            &settings.identity,
            settings.lease_seconds,
        );
        tokio::pin!(watchdog);
        let mut shutting_down = false;
        let mut expired = None;
        tokio::select! {
            _ = &mut shutdown => { shutting_down = true; }
            _ = leader.wait_for(|l| !*l) => { tracing::warn!("leadership lost: stopping controllers"); }
            e = &mut watchdog => {
                tracing::error!(error = %e, "leadership expired: stopping controllers and exiting");
                expired = Some(e);
            }
            _ = &mut controllers => { tracing::error!("controllers stopped unexpectedly"); }
        }
        let _ = stop_tx.send(true);
        if expired.is_none() {
            // graceful: reconciles in flight finish (bounded); an expiring lease allows no such wait
            let _ = tokio::time::timeout(Duration::from_secs(20), &mut controllers).await;
        }
        metrics.leader.set(0);
        if let Some(e) = expired {
            // another replica may lead by now; exiting lets Kubernetes restart this one cleanly
            ready.store(false, Ordering::Relaxed);
            let _ = ops_stop_tx.send(true);
            lease_task.abort();
            return Err(e);
        }
        if shutting_down {
            break;
        }
    }
    tracing::info!("shutting down: releasing the Lease");
    drop(leader);
    match lease_task.await {
        Ok(Ok(manager)) => {
            if let Err(e) = manager.release().await {
                tracing::warn!(error = %e, "cannot release the Lease");
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "lease manager failed"),
        Err(e) => tracing::warn!(error = %e, "lease manager task failed"),
    }
    let _ = ops_stop_tx.send(true);
    let _ = ops.await;
    Ok(())
}

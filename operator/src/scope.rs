//! Which namespaces the operator watches and acts in (`duo-operator run --watch-namespaces a,b`), and
//! the watch streams of that scope.
//!
//! Cluster-wide ([`Scope::Cluster`], the default) every kind is one watch over all namespaces. With
//! `--watch-namespaces` ([`Scope::Namespaces`]) every kind is one watch per listed namespace, so that the
//! operator needs no cluster-wide permission at all: the chart's RBAC becomes a Role per namespace, and a
//! namespaced Role never allows a cluster-wide list (README "RBAC boundary").
//!
//! # Several namespaces into one reflector store
//!
//! kube-runtime's reflector store is made for the events of ONE watcher: each `Init` .. `InitApply` ..
//! `InitDone` (a re-list, after start and whenever a watch expires or fails) replaces the whole store.
//! Merging the namespaces' streams as they come would let one namespace's re-list wipe every other
//! namespace's objects from the store until their own next re-list: a gateway would briefly lose its
//! peers, its MitzConnection or itself. [`merge_for_store`] turns the per-namespace streams into the
//! events of a single watcher instead:
//!
//! - one `Init`, then `InitApply` of every namespace's objects and one `InitDone`, once every namespace
//!   has finished its first list (the store becomes ready only then, as with one cluster-wide watch);
//! - afterwards a namespace's re-list becomes `Apply` for each object it lists and, at its `InitDone`,
//!   `Delete` for each object that namespace had before and no longer lists; the other namespaces'
//!   objects are untouched;
//! - `Apply` / `Delete` and errors pass through.
//!
//! Streams that only trigger reconciliations (`touched_objects`, no store) need none of this: for them
//! [`Scope::watch_touched`] merges the namespaces' objects as they come.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::core::NamespaceResourceScope;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::build::SkippedCommunity;
use crate::condition::Reason;
use crate::crd::DuoGateway;

/// The namespaces the operator watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (no `--watch-namespaces`): one cluster-wide watch per kind.
    #[default]
    Cluster,
    /// Only these namespaces (never empty): one watch per kind and namespace.
    Namespaces(BTreeSet<String>),
}

/// A watch stream of `K`'s events, as `kube::runtime::watcher` yields them.
pub type EventStream<K> = BoxStream<'static, Result<Event<K>, watcher::Error>>;

/// Whether `s` is a Kubernetes namespace name: an RFC 1123 label (lower-case letters, digits and `-`,
/// starting and ending with a letter or digit, at most 63 characters).
fn is_namespace_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && ok(&b[0])
        && ok(&b[b.len() - 1])
        && b.iter().all(|c| ok(c) || *c == b'-')
}

impl Scope {
    /// The scope of `--watch-namespaces` (the list as given, entries trimmed, empty entries ignored):
    /// [`Scope::Cluster`] when no namespace is left, else the set of namespaces.
    ///
    /// Errors: an entry that is not a namespace name (RFC 1123 label), named in a one-line message.
    pub fn from_namespaces<I, S>(names: I) -> Result<Scope, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for n in names {
            let n = n.as_ref().trim();
            if n.is_empty() {
                continue;
            }
            if !is_namespace_name(n) {
                return Err(format!(
                    "--watch-namespaces: {n:?} is not a namespace name (lower-case letters, digits and '-', at most 63 characters)"
                ));
            }
            set.insert(n.to_owned());
        }
        Ok(if set.is_empty() {
            Scope::Cluster
        } else {
            Scope::Namespaces(set)
        })
    }

    /// Whether objects in namespace `ns` are watched.
    pub fn contains(&self, ns: &str) -> bool {
        match self {
            Scope::Cluster => true,
            Scope::Namespaces(set) => set.contains(ns),
        }
    }

    /// One `Api` per watched namespace, or the cluster-wide one.
    fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::Cluster => vec![Api::all(client.clone())],
            Scope::Namespaces(set) => set
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }

    /// The watch events of `K` in this scope (with kube's default backoff after errors), fit for a
    /// reflector store: cluster-wide the one watcher's stream, per namespace merged by
    /// [`merge_for_store`].
    pub fn watch<K>(&self, client: &Client, config: watcher::Config) -> EventStream<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        let watch = |api: Api<K>| watcher(api, config.clone()).default_backoff().boxed();
        match self {
            Scope::Cluster => watch(Api::all(client.clone())),
            Scope::Namespaces(_) => {
                merge_for_store(self.apis::<K>(client).into_iter().map(watch).collect()).boxed()
            }
        }
    }

    /// The objects of `K` that the watches of this scope see change (kube's `touched_objects`: listed,
    /// added, modified or deleted), for triggers without a store; the namespaces' streams merged as they
    /// come.
    pub fn watch_touched<K>(
        &self,
        client: &Client,
        config: watcher::Config,
    ) -> BoxStream<'static, Result<K, watcher::Error>>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + fmt::Debug
            + Send
            + Sync
            + 'static,
    {
        futures::stream::select_all(self.apis::<K>(client).into_iter().map(|api| {
            watcher(api, config.clone())
                .default_backoff()
                .touched_objects()
                .boxed()
        }))
        .boxed()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster => f.write_str("every namespace"),
            Scope::Namespaces(set) => {
                f.write_str("--watch-namespaces ")?;
                f.write_str(&set.iter().cloned().collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// The namespaces in `gw`'s `spec.communities.namespaces` that `scope` does not watch, as entries for
/// the `CommunitiesSkipped` condition (reason [`Reason::NamespaceNotWatched`]): the operator cannot see
/// the DuoCommunities there, so the gateway is told rather than silently getting fewer peers. The
/// gateway's own namespace (the default) is always watched: the operator sees the gateway.
pub fn unwatched_community_namespaces(gw: &DuoGateway, scope: &Scope) -> Vec<SkippedCommunity> {
    let Some(namespaces) = gw
        .spec
        .communities
        .as_ref()
        .and_then(|c| c.namespaces.as_ref())
    else {
        return Vec::new();
    };
    let unwatched: BTreeSet<&String> = namespaces.iter().filter(|n| !scope.contains(n)).collect();
    unwatched
        .into_iter()
        .map(|ns| SkippedCommunity {
            community: format!("{ns}/*"),
            reason: Reason::NamespaceNotWatched,
            message: format!(
                "spec.communities.namespaces: namespace {ns:?} is not watched by the operator ({scope}); its DuoCommunities cannot be seen"
            ),
        })
        .collect()
}

/// Key of an object within the merged stream.
type Key = (Option<String>, String);

fn key<K: ResourceExt>(k: &K) -> Key {
    (k.namespace(), k.name_any())
}

/// One input stream's state in [`Merge`].
struct Part<K> {
    /// The objects of this stream that the merged stream has given out (and not deleted since); before
    /// the first merged `InitDone`, the objects of this stream's last complete list and changes since.
    known: BTreeMap<Key, K>,
    /// The objects of the list under way (between this stream's `Init` and `InitDone`).
    listing: Option<BTreeMap<Key, K>>,
    /// A complete list was received (before the merged `InitDone`: since this stream's latest `Init`).
    listed: bool,
}

/// The state of [`merge_for_store`]: turns the events of several watchers into those of one.
struct Merge<K> {
    parts: Vec<Part<K>>,
    /// The merged `Init` .. `InitDone` has been given out.
    ready: bool,
}

impl<K: ResourceExt + Clone> Merge<K> {
    fn new(n: usize) -> Merge<K> {
        Merge {
            parts: (0..n)
                .map(|_| Part {
                    known: BTreeMap::new(),
                    listing: None,
                    listed: false,
                })
                .collect(),
            ready: false,
        }
    }

    /// The merged first list (`Init`, every stream's objects, `InitDone`) once every stream has listed
    /// or failed; nothing before that or after it was given.
    fn first_list_if_complete(&mut self) -> Vec<Event<K>> {
        if self.ready || !self.parts.iter().all(|p| p.listed) {
            return Vec::new();
        }
        self.ready = true;
        let mut out = vec![Event::Init];
        out.extend(
            self.parts
                .iter()
                .flat_map(|p| p.known.values().cloned().map(Event::InitApply)),
        );
        out.push(Event::InitDone);
        out
    }

    /// Input stream `i` failed (its namespace answers 403 because its Role is missing, the namespace
    /// was deleted, ...). Before the merged first list, it counts as listed with what it had, so that
    /// one namespace cannot hold back every other one; its watcher keeps retrying, and its list, when
    /// it comes, is merged as a later re-list (Apply / Delete).
    fn failed(&mut self, i: usize) -> Vec<Event<K>> {
        if self.ready {
            return Vec::new();
        }
        let p = &mut self.parts[i];
        p.listing = None;
        p.listed = true;
        self.first_list_if_complete()
    }

    /// The merged events for event `ev` of input stream `i`.
    fn handle(&mut self, i: usize, ev: Event<K>) -> Vec<Event<K>> {
        let ready = self.ready;
        let p = &mut self.parts[i];
        match ev {
            Event::Init => {
                p.listing = Some(BTreeMap::new());
                if !ready {
                    // a restarted first list: wait for this one to complete
                    p.listed = false;
                }
                Vec::new()
            }
            Event::InitApply(k) => {
                let listing = p.listing.get_or_insert_with(BTreeMap::new);
                listing.insert(key(&k), k.clone());
                if ready {
                    // the store may hold it from now on: known, so a later re-list can delete it
                    p.known.insert(key(&k), k.clone());
                    vec![Event::Apply(k)]
                } else {
                    Vec::new()
                }
            }
            Event::InitDone => {
                let listed = p.listing.take().unwrap_or_default();
                let old = std::mem::replace(&mut p.known, listed);
                p.listed = true;
                if ready {
                    return old
                        .into_iter()
                        .filter(|(k, _)| !p.known.contains_key(k))
                        .map(|(_, obj)| Event::Delete(obj))
                        .collect();
                }
                self.first_list_if_complete()
            }
            Event::Apply(k) => {
                if let Some(listing) = p.listing.as_mut() {
                    listing.insert(key(&k), k.clone());
                }
                p.known.insert(key(&k), k.clone());
                if ready {
                    vec![Event::Apply(k)]
                } else {
                    Vec::new()
                }
            }
            Event::Delete(k) => {
                if let Some(listing) = p.listing.as_mut() {
                    listing.remove(&key(&k));
                }
                p.known.remove(&key(&k));
                if ready {
                    vec![Event::Delete(k)]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

/// The watch events of several watchers (one per namespace) as the events of one watcher, so that one
/// reflector store can take them (module documentation); errors pass through as they come.
pub fn merge_for_store<K, S>(
    streams: Vec<S>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static
where
    K: ResourceExt + Clone + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
{
    let mut merge = Merge::new(streams.len());
    futures::stream::select_all(
        streams
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.map(move |r| (i, r)).boxed()),
    )
    .flat_map(move |(i, r)| {
        futures::stream::iter(match r {
            Ok(ev) => merge.handle(i, ev).into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => {
                // a failing namespace is reported (the error passes on) and holds back no other
                let mut out = vec![Err(e)];
                out.extend(merge.failed(i).into_iter().map(Ok));
                out
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::{self, ObjectRef};

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c.data = Some([("v".to_owned(), v.to_owned())].into());
        c
    }

    /// `ns/name=v` of every object in the store, sorted.
    fn contents(store: &reflector::Store<ConfigMap>) -> Vec<String> {
        let mut v: Vec<String> = store
            .state()
            .iter()
            .map(|c| {
                format!(
                    "{}/{}={}",
                    c.namespace().unwrap_or_default(),
                    c.name_any(),
                    c.data.as_ref().expect("data")["v"]
                )
            })
            .collect();
        v.sort();
        v
    }

    fn names(evs: &[Event<ConfigMap>]) -> Vec<String> {
        evs.iter()
            .map(|e| match e {
                Event::Init => "Init".to_owned(),
                Event::InitDone => "InitDone".to_owned(),
                Event::InitApply(c) => format!("InitApply {}", c.name_any()),
                Event::Apply(c) => format!("Apply {}", c.name_any()),
                Event::Delete(c) => format!("Delete {}", c.name_any()),
            })
            .collect()
    }

    /// Feeds `(stream, event)` pairs through a [`Merge`] into a real reflector writer, returning the
    /// merged events of each step.
    struct Harness {
        merge: Merge<ConfigMap>,
        writer: reflector::store::Writer<ConfigMap>,
        store: reflector::Store<ConfigMap>,
    }

    impl Harness {
        fn new(n: usize) -> Harness {
            let (store, writer) = reflector::store();
            Harness {
                merge: Merge::new(n),
                writer,
                store,
            }
        }

        fn feed(&mut self, i: usize, ev: Event<ConfigMap>) -> Vec<Event<ConfigMap>> {
            let out = self.merge.handle(i, ev);
            for e in &out {
                self.writer.apply_watcher_event(e);
            }
            out
        }

        fn list(&mut self, i: usize, objs: &[ConfigMap]) -> Vec<Event<ConfigMap>> {
            let mut out = self.feed(i, Event::Init);
            for o in objs {
                out.extend(self.feed(i, Event::InitApply(o.clone())));
            }
            out.extend(self.feed(i, Event::InitDone));
            out
        }
    }

    /// A namespace whose list fails (403: its Role is missing) does not hold back the others; when it
    /// lists later, its objects arrive as changes.
    #[test]
    fn a_failing_namespace_does_not_hold_back_the_others() {
        let mut h = Harness::new(2);
        assert!(h.list(0, &[cm("a", "x", "1")]).is_empty());
        let first = h.merge.failed(1);
        for e in &first {
            h.writer.apply_watcher_event(e);
        }
        assert_eq!(names(&first), ["Init", "InitApply x", "InitDone"]);
        assert_eq!(contents(&h.store), ["a/x=1"]);
        assert!(h.merge.failed(1).is_empty(), "only once");
        let later = h.list(1, &[cm("b", "z", "1")]);
        assert_eq!(names(&later), ["Apply z"]);
        assert_eq!(contents(&h.store), ["a/x=1", "b/z=1"]);
    }

    #[test]
    fn a_re_list_of_one_namespace_changes_only_that_namespace() {
        let mut h = Harness::new(2);
        // a lists first: nothing yet, the store is not ready until b has listed too
        assert!(
            h.list(0, &[cm("a", "x", "1"), cm("a", "y", "1")])
                .is_empty()
        );
        assert!(h.store.get(&ObjectRef::new("x").within("a")).is_none());
        // a change in a before b has listed is kept for the first merged list
        assert!(h.feed(0, Event::Apply(cm("a", "x", "2"))).is_empty());
        let first = h.list(1, &[cm("b", "z", "1")]);
        assert_eq!(
            names(&first),
            [
                "Init",
                "InitApply x",
                "InitApply y",
                "InitApply z",
                "InitDone"
            ]
        );
        assert_eq!(contents(&h.store), ["a/x=2", "a/y=1", "b/z=1"]);

        // b re-lists (its watch expired): z changed, w is new; a's objects stay
        let relist = h.list(1, &[cm("b", "z", "2"), cm("b", "w", "1")]);
        assert_eq!(names(&relist), ["Apply z", "Apply w"]);
        assert_eq!(contents(&h.store), ["a/x=2", "a/y=1", "b/w=1", "b/z=2"]);

        // a re-lists without y (deleted while its watch was down): y is deleted, b untouched
        let relist = h.list(0, &[cm("a", "x", "2")]);
        assert_eq!(names(&relist), ["Apply x", "Delete y"]);
        assert_eq!(contents(&h.store), ["a/x=2", "b/w=1", "b/z=2"]);

        // watch events pass through
        assert_eq!(
            names(&h.feed(1, Event::Delete(cm("b", "w", "1")))),
            ["Delete w"]
        );
        assert_eq!(
            names(&h.feed(0, Event::Apply(cm("a", "v", "1")))),
            ["Apply v"]
        );
        assert_eq!(contents(&h.store), ["a/v=1", "a/x=2", "b/z=2"]);

        // the same stream as one watcher per namespace merged naively: b's re-list wipes a
        let (naive, mut naive_writer) = reflector::store::<ConfigMap>();
        for e in [
            Event::Init,
            Event::InitApply(cm("a", "x", "1")),
            Event::InitDone,
            Event::Init,
            Event::InitApply(cm("b", "z", "1")),
            Event::InitDone,
        ] {
            naive_writer.apply_watcher_event(&e);
        }
        assert_eq!(
            contents(&naive),
            ["b/z=1"],
            "control: the naive merge loses a"
        );
    }

    #[test]
    fn an_interrupted_re_list_deletes_what_it_gave_out_and_is_gone() {
        let mut h = Harness::new(2);
        h.list(0, &[cm("a", "x", "1")]);
        h.list(1, &[cm("b", "z", "1")]);
        // a's re-list gives out a new object, fails, and starts again without it
        h.feed(0, Event::Init);
        assert_eq!(
            names(&h.feed(0, Event::InitApply(cm("a", "new", "1")))),
            ["Apply new"]
        );
        assert_eq!(contents(&h.store), ["a/new=1", "a/x=1", "b/z=1"]);
        let out = h.list(0, &[cm("a", "x", "1")]);
        assert_eq!(names(&out), ["Apply x", "Delete new"]);
        assert_eq!(contents(&h.store), ["a/x=1", "b/z=1"]);
    }

    #[test]
    fn the_first_list_waits_for_every_namespace_and_a_restarted_one() {
        let mut h = Harness::new(3);
        h.list(0, &[cm("a", "x", "1")]);
        h.list(1, &[]);
        // a restarts its first list before c has listed: the merged list holds a's second list
        h.feed(0, Event::Init);
        h.feed(0, Event::InitApply(cm("a", "y", "1")));
        assert!(h.list(2, &[cm("c", "z", "1")]).is_empty(), "a is not done");
        let out = h.feed(0, Event::InitDone);
        assert_eq!(
            names(&out),
            ["Init", "InitApply y", "InitApply z", "InitDone"]
        );
        assert_eq!(contents(&h.store), ["a/y=1", "c/z=1"]);
        // a deletion before the first merged list is not given out
        let mut h = Harness::new(2);
        h.list(0, &[cm("a", "x", "1")]);
        assert!(h.feed(0, Event::Delete(cm("a", "x", "1"))).is_empty());
        let out = h.list(1, &[]);
        assert_eq!(names(&out), ["Init", "InitDone"]);
        assert!(contents(&h.store).is_empty());
    }

    #[tokio::test]
    async fn the_merged_stream_feeds_a_reflector_and_passes_errors() {
        let a = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "x", "1"))),
            Ok(Event::InitDone),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Init),
            Ok(Event::InitDone),
        ]);
        let b = futures::stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("b", "z", "1"))),
            Ok(Event::InitDone),
        ]);
        let (store, writer) = reflector::store::<ConfigMap>();
        let out: Vec<_> = merge_for_store(vec![a.boxed(), b.boxed()])
            .reflect(writer)
            .collect()
            .await;
        assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1, "the error");
        // whatever the interleaving: a re-listed empty, b still has z
        assert_eq!(contents(&store), ["b/z=1"]);
        assert!(store.wait_until_ready().await.is_ok());
    }

    #[test]
    fn watch_namespaces_are_parsed_strictly() {
        assert_eq!(
            Scope::from_namespaces(Vec::<String>::new()),
            Ok(Scope::Cluster)
        );
        assert_eq!(Scope::from_namespaces(["", " "]), Ok(Scope::Cluster));
        let s = Scope::from_namespaces(["b", " a", "b", ""]).expect("valid");
        assert_eq!(
            s,
            Scope::Namespaces(["a".to_owned(), "b".to_owned()].into())
        );
        assert!(s.contains("a") && !s.contains("c"));
        assert!(Scope::Cluster.contains("c"));
        assert_eq!(s.to_string(), "--watch-namespaces a,b");
        for bad in ["A", "a_b", "-a", "a-", "a.b", &"x".repeat(64), "a/b", "ä"] {
            let e = Scope::from_namespaces([bad]).expect_err(bad);
            assert!(
                e.starts_with("--watch-namespaces: ") && e.contains(&format!("{bad:?}")),
                "{e}"
            );
        }
        assert!(Scope::from_namespaces([&"x".repeat(63)]).is_ok());
    }

    #[test]
    fn a_gateway_is_told_which_selected_namespaces_are_not_watched() {
        let gw = |namespaces: Option<Vec<&str>>| {
            let mut g = crate::build::tests::gateway();
            g.spec.communities = Some(crate::crd::CommunitySelection {
                selector: Default::default(),
                namespaces: namespaces.map(|v| v.into_iter().map(String::from).collect()),
            });
            g
        };
        let scope = Scope::from_namespaces(["a", "b"]).expect("valid");
        assert!(unwatched_community_namespaces(&gw(None), &scope).is_empty());
        assert!(unwatched_community_namespaces(&gw(Some(vec!["a", "b"])), &scope).is_empty());
        let skipped = unwatched_community_namespaces(&gw(Some(vec!["c", "a", "d", "c"])), &scope);
        assert_eq!(
            skipped
                .iter()
                .map(|s| s.community.as_str())
                .collect::<Vec<_>>(),
            ["c/*", "d/*"]
        );
        assert!(
            skipped
                .iter()
                .all(|s| s.reason == Reason::NamespaceNotWatched)
        );
        assert_eq!(
            skipped[0].message,
            "spec.communities.namespaces: namespace \"c\" is not watched by the operator (--watch-namespaces a,b); its DuoCommunities cannot be seen"
        );
        assert!(unwatched_community_namespaces(&gw(Some(vec!["c"])), &Scope::Cluster).is_empty());
    }
}

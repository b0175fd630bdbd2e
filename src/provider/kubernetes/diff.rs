//! `plan` of a Kubernetes stack: the rendered objects against what the API server holds under
//! the stack's labels (pure, unit-tested).
//!
//! Every object agent-army applies carries the SHA-256 of its own rendered content in the
//! annotation [`APPLIED`], as `kubectl apply` keeps its last-applied configuration: the live
//! object gains defaults and other managers' fields, so comparing it field by field would see
//! changes that are not there. The same hash on both sides means nothing to apply.
//!
//! What the cluster holds under the stack's labels and the project no longer renders (an agent
//! removed from `agent-army.toml`) is deleted, except its volume claims: data goes only with
//! `destroy --delete-volumes`. A namespace that exists without the stack's labels belongs to
//! someone else: it is used, never applied over, never deleted.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::render::kubernetes::{LABEL_AGENT, LABEL_PROJECT, LABEL_STACK};

/// The annotation with the SHA-256 of the rendered object (before the annotation).
pub const APPLIED: &str = "agent-army/applied-sha256";

/// The kinds a stack's objects are listed by, for `plan` and `destroy` (all namespaced),
/// in the order their deletes go: pods stop before their Secrets go.
pub const LISTED: &[&str] = &[
    "StatefulSet",
    "Service",
    "ConfigMap",
    "Secret",
    "NetworkPolicy",
];

/// On a StatefulSet: the SHA-256 of the fields the API server never lets change
/// (`selector`, `serviceName`, `volumeClaimTemplates`: the sizes and storage class of its
/// volumes).
pub const FIXED: &str = "agent-army/fixed-sha256";

fn fixed_hash(obj: &Value) -> Option<String> {
    (obj["kind"] == "StatefulSet").then(|| {
        let spec = &obj["spec"];
        let fixed = serde_json::json!([
            spec["selector"],
            spec["serviceName"],
            spec["volumeClaimTemplates"]
        ]);
        hex::encode(Sha256::digest(fixed.to_string()))
    })
}

/// Put the object's content hash into its annotations (and a StatefulSet's [`FIXED`] hash).
pub fn stamp(obj: &mut Value) {
    if let Some(fixed) = fixed_hash(obj)
        && let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
    {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(FIXED.into(), fixed.into());
        }
    }
    // The hash is of the object as rendered: without the stamp (and without the annotations
    // map the stamp alone made).
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(APPLIED);
        }
        if meta
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
        {
            meta.remove("annotations");
        }
    }
    // serde_json cannot fail on a `Value`.
    let hash = hex::encode(Sha256::digest(
        serde_json::to_vec(&*obj).unwrap_or_default(),
    ));
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED.into(), hash.into());
        }
    }
}

/// An object the API server holds: its kind (from the list it came in), name, labels and the
/// hash agent-army stamped on it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub kind: String,
    pub name: String,
    pub applied: Option<String>,
    /// A StatefulSet's [`FIXED`] hash.
    pub fixed: Option<String>,
    pub stack: Option<String>,
    pub project: Option<String>,
    pub agent: Option<String>,
}

impl Live {
    /// From an object as the API server answers it (a list's items have no `kind`).
    pub fn from_api(kind: &str, obj: &Value) -> Live {
        let meta = &obj["metadata"];
        let text = |v: &Value| v.as_str().map(str::to_string);
        Live {
            kind: kind.to_string(),
            name: text(&meta["name"]).unwrap_or_default(),
            applied: text(&meta["annotations"][APPLIED]),
            fixed: text(&meta["annotations"][FIXED]),
            stack: text(&meta["labels"][LABEL_STACK]),
            project: text(&meta["labels"][LABEL_PROJECT]),
            agent: text(&meta["labels"][LABEL_AGENT]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
    /// Unchanged.
    Keep,
    /// A namespace that exists without the stack's labels: used as it is.
    Foreign,
    /// A replaced agent's pod, deleted so that its StatefulSet starts it afresh.
    Restart,
    /// A StatefulSet whose fixed fields changed, with `--replace`: deleted without its pod
    /// (orphaned, then adopted) and made again.
    Recreate,
}

impl Action {
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update | Action::Restart => "~",
            Action::Recreate => "-/+",
            Action::Delete => "-",
            Action::Keep | Action::Foreign => " ",
        }
    }
}

/// One object's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: Action,
    pub kind: String,
    pub name: String,
    /// The agent it belongs to (`None` for the stack's own objects).
    pub agent: Option<String>,
    /// Index into the desired objects (creates and updates).
    #[serde(skip)]
    pub desired: Option<usize>,
}

/// The changes of a stack, in the order they are made: applies in the rendered order, then
/// deletes in [`LISTED`]'s order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KubePlan {
    pub changes: Vec<Change>,
    /// Changes the API server would refuse, each with what to do instead: nothing is applied
    /// while there is one.
    pub blocked: Vec<String>,
}

impl KubePlan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    pub fn has_changes(&self) -> bool {
        self.changes
            .iter()
            .any(|c| !matches!(c.action, Action::Keep | Action::Foreign))
    }

    /// The agents removed from the project whose objects the plan deletes (their volume
    /// claims stay).
    pub fn removed_agents(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .filter_map(|c| c.agent.clone())
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The plan of `desired` (stamped, rendered order) against `live`: the stack's labelled
/// objects of the [`LISTED`] kinds, and the namespace as it is (`None`: absent).
pub fn diff(
    desired: &[Value],
    live: &[Live],
    namespace: Option<&Live>,
    project: &str,
    stack: &str,
    replace: &std::collections::BTreeSet<String>,
) -> KubePlan {
    let ours =
        |l: &Live| l.stack.as_deref() == Some(stack) && l.project.as_deref() == Some(project);
    let mut changes = Vec::new();
    let mut blocked = Vec::new();
    let mut wanted = std::collections::BTreeSet::new();
    for (i, obj) in desired.iter().enumerate() {
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let hash = obj["metadata"]["annotations"][APPLIED].as_str();
        let agent = obj["metadata"]["labels"][LABEL_AGENT]
            .as_str()
            .map(str::to_string);
        let found = if kind == "Namespace" {
            namespace
        } else {
            live.iter().find(|l| l.kind == kind && l.name == name)
        };
        let replaced = agent.as_ref().is_some_and(|a| replace.contains(a));
        let fixed_changed = found
            .and_then(|l| l.fixed.as_deref())
            .is_some_and(|f| Some(f) != obj["metadata"]["annotations"][FIXED].as_str());
        if fixed_changed && !replaced {
            blocked.push(format!(
                "{kind}/{name}: its volumes changed (`disk_gb`, `storage_class` or `tailscale_state_gb`), which Kubernetes never changes on a StatefulSet; `deploy --replace {}` makes the StatefulSet again around the same pod and claims (existing claims keep their size and class: grow one with `kubectl patch pvc`, if its class allows expansion), or set the old values back",
                agent.as_deref().unwrap_or_default()
            ));
        }
        let action = match found {
            None => Action::Create,
            Some(_) if fixed_changed && replaced => Action::Recreate,
            Some(l) if kind == "Namespace" && !ours(l) => Action::Foreign,
            // `--replace`: applied again (taking back what was changed by hand), unchanged
            // or not.
            Some(_) if replaced => Action::Update,
            Some(l) if l.applied.is_some() && l.applied.as_deref() == hash => Action::Keep,
            Some(_) => Action::Update,
        };
        wanted.insert((kind.clone(), name.clone()));
        // A replaced agent's pod restarts, once its objects are applied (its volumes stay).
        let restart = (kind == "StatefulSet" && found.is_some())
            .then(|| agent.clone().filter(|a| replace.contains(a)))
            .flatten()
            .map(|a| Change {
                action: Action::Restart,
                kind: "Pod".into(),
                name: format!("{name}-0"),
                agent: Some(a),
                desired: None,
            });
        changes.push(Change {
            action,
            kind,
            name,
            agent,
            desired: matches!(action, Action::Create | Action::Update | Action::Recreate)
                .then_some(i),
        });
        changes.extend(restart);
    }
    for kind in LISTED {
        let mut gone: Vec<&Live> = live
            .iter()
            .filter(|l| l.kind == *kind && ours(l))
            .filter(|l| !wanted.contains(&(l.kind.clone(), l.name.clone())))
            .collect();
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        changes.extend(gone.into_iter().map(|l| Change {
            action: Action::Delete,
            kind: l.kind.clone(),
            name: l.name.clone(),
            agent: l.agent.clone(),
            desired: None,
        }));
    }
    KubePlan { changes, blocked }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, agent: Option<&str>, data: &str) -> Value {
        let mut labels = json!({ LABEL_PROJECT: "demo", LABEL_STACK: "dev" });
        if let Some(a) = agent {
            labels[LABEL_AGENT] = json!(a);
        }
        let mut o = json!({
            "apiVersion": "v1", "kind": kind,
            "metadata": { "name": name, "namespace": "agents", "labels": labels },
            "data": { "x": data },
        });
        stamp(&mut o);
        o
    }

    fn none() -> std::collections::BTreeSet<String> {
        Default::default()
    }

    fn live_of(o: &Value) -> Live {
        Live::from_api(o["kind"].as_str().unwrap(), o)
    }

    #[test]
    fn stamping_is_stable_and_sees_any_change() {
        let a = obj("ConfigMap", "c", Some("pm"), "1");
        let mut again = a.clone();
        stamp(&mut again);
        assert_eq!(a, again, "stamping a stamped object changes nothing");
        let b = obj("ConfigMap", "c", Some("pm"), "2");
        assert_ne!(
            a["metadata"]["annotations"][APPLIED],
            b["metadata"]["annotations"][APPLIED]
        );
        assert_eq!(
            a["metadata"]["annotations"][APPLIED]
                .as_str()
                .unwrap()
                .len(),
            64
        );
    }

    #[test]
    fn creates_keeps_updates_and_prunes_removed_agents_but_not_their_volumes() {
        let ns = obj("Namespace", "agents", None, "");
        let desired = vec![
            ns.clone(),
            obj("ConfigMap", "dev-pm-config", Some("pm"), "new"),
            obj("Secret", "dev-pm-gateway", Some("pm"), "same"),
            obj("ConfigMap", "dev-qa-config", Some("qa"), "x"),
        ];
        let live = vec![
            live_of(&obj("ConfigMap", "dev-pm-config", Some("pm"), "old")),
            live_of(&desired[2]),
            live_of(&obj("StatefulSet", "dev-gone", Some("gone"), "")),
            live_of(&obj("Secret", "dev-gone-gateway", Some("gone"), "")),
            live_of(&obj(
                "PersistentVolumeClaim",
                "data-dev-gone-0",
                Some("gone"),
                "",
            )),
            // Another stack's object in the same namespace is none of this plan's business.
            Live {
                stack: Some("prod".into()),
                ..live_of(&obj("Secret", "prod-pm-gateway", Some("pm"), ""))
            },
        ];
        let plan = diff(&desired, &live, Some(&live_of(&ns)), "demo", "dev", &none());
        let got: Vec<(Action, &str)> = plan
            .changes
            .iter()
            .map(|c| (c.action, c.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Action::Keep, "agents"),
                (Action::Update, "dev-pm-config"),
                (Action::Keep, "dev-pm-gateway"),
                (Action::Create, "dev-qa-config"),
                (Action::Delete, "dev-gone"),
                (Action::Delete, "dev-gone-gateway"),
            ]
        );
        assert_eq!(plan.changes[1].desired, Some(1));
        assert_eq!(plan.changes[2].desired, None);
        assert_eq!(plan.removed_agents(), vec!["gone".to_string()]);
        assert!(plan.has_changes());
        assert_eq!(
            (
                plan.count(Action::Create),
                plan.count(Action::Update),
                plan.count(Action::Delete)
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn a_namespace_without_the_stack_labels_is_used_never_applied() {
        let ns = obj("Namespace", "agents", None, "");
        let foreign = Live {
            stack: None,
            project: None,
            applied: None,
            ..live_of(&ns)
        };
        let plan = diff(
            std::slice::from_ref(&ns),
            &[],
            Some(&foreign),
            "demo",
            "dev",
            &none(),
        );
        assert_eq!(plan.changes[0].action, Action::Foreign);
        assert!(!plan.has_changes());
        let plan = diff(std::slice::from_ref(&ns), &[], None, "demo", "dev", &none());
        assert_eq!(plan.changes[0].action, Action::Create);
    }

    #[test]
    fn an_object_without_the_hash_is_updated() {
        let want = obj("Service", "dev-pm", Some("pm"), "");
        let mut l = live_of(&want);
        l.applied = None;
        let plan = diff(
            std::slice::from_ref(&want),
            &[l],
            None,
            "demo",
            "dev",
            &none(),
        );
        assert_eq!(plan.changes[0].action, Action::Update);
    }

    #[test]
    fn a_replaced_agent_is_applied_again_unchanged_or_not() {
        let want = obj("Service", "dev-pm", Some("pm"), "");
        let other = obj("Service", "dev-qa", Some("qa"), "");
        let live = [live_of(&want), live_of(&other)];
        let desired = [want, other];
        let replace = std::collections::BTreeSet::from(["pm".to_string()]);
        let plan = diff(&desired, &live, None, "demo", "dev", &replace);
        let got: Vec<Action> = plan.changes.iter().map(|c| c.action).collect();
        assert_eq!(got, vec![Action::Update, Action::Keep]);
        // Its StatefulSet's pod restarts after it is applied.
        let sts = obj("StatefulSet", "dev-pm", Some("pm"), "");
        let plan = diff(
            std::slice::from_ref(&sts),
            &[live_of(&sts)],
            None,
            "demo",
            "dev",
            &replace,
        );
        let got: Vec<(Action, &str)> = plan
            .changes
            .iter()
            .map(|c| (c.action, c.name.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![(Action::Update, "dev-pm"), (Action::Restart, "dev-pm-0")]
        );
        assert!(plan.has_changes());
    }
}

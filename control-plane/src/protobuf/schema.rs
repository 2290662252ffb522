//! The protobuf schemas of the kinds decoded from request bodies: field number → JSON
//! name and type, following k8s.io/api and k8s.io/apimachinery `generated.proto`.
//!
//! Only the messages that kubectl's generator subcommands fill in are listed, with the
//! fields a user can set on them; a field missing here that arrives with a non-empty
//! value makes the decoder refuse the body (415) rather than drop it.
//!
//! Go marshals every non-pointer field, also when it is empty, while JSON omits empty
//! `omitempty` fields: plain scalars ([`Ty::Str`], [`Ty::Int`], [`Ty::Bool`]) are
//! therefore dropped when zero, and the `Opt*` types (Go pointers) are kept as sent.

/// How a field's value becomes JSON.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// string, omitted when empty.
    Str,
    /// `*string`: kept when empty.
    OptStr,
    /// int32/int64, omitted when 0.
    Int,
    /// `*int32`/`*int64`: kept when 0.
    OptInt,
    /// bool, omitted when false.
    Bool,
    /// `*bool`: kept when false.
    OptBool,
    /// A nested message, always kept (also when empty, like Go's non-pointer structs).
    Msg(&'static Msg),
    /// An embedded struct whose fields JSON inlines into the parent object.
    Inline(&'static Msg),
    /// resource.Quantity `{1: string}` → its string.
    Quantity,
    /// intstr.IntOrString `{1: type, 2: intVal, 3: strVal}` → a number or a string.
    IntOrString,
    /// meta.v1.Time `{1: seconds, 2: nanos}` → RFC 3339; omitted when zero.
    Time,
    /// map<string, string>.
    MapStr,
    /// map<string, bytes> → base64 values.
    MapBytes,
    /// map<string, Quantity>.
    MapQuantity,
}

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub struct F {
    /// Field number.
    pub num: u64,
    /// JSON name.
    pub name: &'static str,
    /// Value type.
    pub ty: Ty,
    /// A repeated field: a JSON array.
    pub rep: bool,
}

/// A message: its name (for errors) and fields.
#[derive(Debug)]
pub struct Msg {
    /// The proto message name.
    pub name: &'static str,
    /// Its fields.
    pub fields: &'static [F],
}

impl Msg {
    /// The field with number `num`.
    pub fn field(&self, num: u64) -> Option<&F> {
        self.fields.iter().find(|f| f.num == num)
    }
}

const fn f(num: u64, name: &'static str, ty: Ty) -> F {
    F {
        num,
        name,
        ty,
        rep: false,
    }
}

const fn r(num: u64, name: &'static str, ty: Ty) -> F {
    F {
        num,
        name,
        ty,
        rep: true,
    }
}

use Ty::*;

// k8s.io/apimachinery/pkg/apis/meta/v1

pub static OBJECT_META: Msg = Msg {
    name: "ObjectMeta",
    fields: &[
        f(1, "name", Str),
        f(2, "generateName", Str),
        f(3, "namespace", Str),
        f(4, "selfLink", Str),
        f(5, "uid", Str),
        f(6, "resourceVersion", Str),
        f(7, "generation", Int),
        f(8, "creationTimestamp", Time),
        f(9, "deletionTimestamp", Time),
        f(10, "deletionGracePeriodSeconds", OptInt),
        f(11, "labels", MapStr),
        f(12, "annotations", MapStr),
        r(13, "ownerReferences", Msg(&OWNER_REFERENCE)),
        r(14, "finalizers", Str),
    ],
};

static OWNER_REFERENCE: Msg = Msg {
    name: "OwnerReference",
    fields: &[
        f(1, "kind", Str),
        f(3, "name", Str),
        f(4, "uid", Str),
        f(5, "apiVersion", Str),
        f(6, "controller", OptBool),
        f(7, "blockOwnerDeletion", OptBool),
    ],
};

static LABEL_SELECTOR: Msg = Msg {
    name: "LabelSelector",
    fields: &[
        f(1, "matchLabels", MapStr),
        r(2, "matchExpressions", Msg(&LABEL_SELECTOR_REQUIREMENT)),
    ],
};

static LABEL_SELECTOR_REQUIREMENT: Msg = Msg {
    name: "LabelSelectorRequirement",
    fields: &[f(1, "key", Str), f(2, "operator", Str), r(3, "values", Str)],
};

// k8s.io/api/core/v1

pub static NAMESPACE: Msg = Msg {
    name: "Namespace",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&NAMESPACE_SPEC)),
        f(3, "status", Msg(&NAMESPACE_STATUS)),
    ],
};

static NAMESPACE_SPEC: Msg = Msg {
    name: "NamespaceSpec",
    fields: &[r(1, "finalizers", Str)],
};

static NAMESPACE_STATUS: Msg = Msg {
    name: "NamespaceStatus",
    fields: &[f(1, "phase", Str)],
};

pub static CONFIG_MAP: Msg = Msg {
    name: "ConfigMap",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", MapStr),
        f(3, "binaryData", MapBytes),
        f(4, "immutable", OptBool),
    ],
};

pub static SECRET: Msg = Msg {
    name: "Secret",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "data", MapBytes),
        f(3, "type", Str),
        f(4, "stringData", MapStr),
        f(5, "immutable", OptBool),
    ],
};

pub static SERVICE: Msg = Msg {
    name: "Service",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&SERVICE_SPEC)),
        f(3, "status", Msg(&SERVICE_STATUS)),
    ],
};

static SERVICE_SPEC: Msg = Msg {
    name: "ServiceSpec",
    fields: &[
        r(1, "ports", Msg(&SERVICE_PORT)),
        f(2, "selector", MapStr),
        f(3, "clusterIP", Str),
        f(4, "type", Str),
        r(5, "externalIPs", Str),
        f(7, "sessionAffinity", Str),
        f(8, "loadBalancerIP", Str),
        r(9, "loadBalancerSourceRanges", Str),
        f(10, "externalName", Str),
        f(11, "externalTrafficPolicy", Str),
        f(12, "healthCheckNodePort", Int),
        f(13, "publishNotReadyAddresses", Bool),
        f(17, "ipFamilyPolicy", OptStr),
        r(18, "clusterIPs", Str),
        r(19, "ipFamilies", Str),
        f(20, "allocateLoadBalancerNodePorts", OptBool),
        f(21, "loadBalancerClass", OptStr),
        f(22, "internalTrafficPolicy", OptStr),
        f(23, "trafficDistribution", OptStr),
    ],
};

static SERVICE_PORT: Msg = Msg {
    name: "ServicePort",
    fields: &[
        f(1, "name", Str),
        f(2, "protocol", Str),
        f(3, "port", Int),
        f(4, "targetPort", IntOrString),
        f(5, "nodePort", Int),
        f(6, "appProtocol", OptStr),
    ],
};

static SERVICE_STATUS: Msg = Msg {
    name: "ServiceStatus",
    fields: &[f(1, "loadBalancer", Msg(&LOAD_BALANCER_STATUS))],
};

static LOAD_BALANCER_STATUS: Msg = Msg {
    name: "LoadBalancerStatus",
    fields: &[r(1, "ingress", Msg(&LOAD_BALANCER_INGRESS))],
};

static LOAD_BALANCER_INGRESS: Msg = Msg {
    name: "LoadBalancerIngress",
    fields: &[
        f(1, "ip", Str),
        f(2, "hostname", Str),
        f(3, "ipMode", OptStr),
    ],
};

pub static POD: Msg = Msg {
    name: "Pod",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&POD_SPEC)),
        f(3, "status", Msg(&POD_STATUS)),
    ],
};

static POD_STATUS: Msg = Msg {
    name: "PodStatus",
    fields: &[f(1, "phase", Str)],
};

static POD_TEMPLATE_SPEC: Msg = Msg {
    name: "PodTemplateSpec",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&POD_SPEC)),
    ],
};

static POD_SPEC: Msg = Msg {
    name: "PodSpec",
    fields: &[
        r(2, "containers", Msg(&CONTAINER)),
        f(3, "restartPolicy", Str),
        f(4, "terminationGracePeriodSeconds", OptInt),
        f(5, "activeDeadlineSeconds", OptInt),
        f(6, "dnsPolicy", Str),
        f(7, "nodeSelector", MapStr),
        f(8, "serviceAccountName", Str),
        f(9, "serviceAccount", Str),
        f(10, "nodeName", Str),
        f(11, "hostNetwork", Bool),
        f(12, "hostPID", Bool),
        f(13, "hostIPC", Bool),
        r(15, "imagePullSecrets", Msg(&LOCAL_OBJECT_REFERENCE)),
        f(16, "hostname", Str),
        f(17, "subdomain", Str),
        f(19, "schedulerName", Str),
        r(20, "initContainers", Msg(&CONTAINER)),
        f(21, "automountServiceAccountToken", OptBool),
        r(22, "tolerations", Msg(&TOLERATION)),
        f(24, "priorityClassName", Str),
        f(25, "priority", OptInt),
        f(27, "shareProcessNamespace", OptBool),
        f(29, "runtimeClassName", OptStr),
        f(30, "enableServiceLinks", OptBool),
        f(31, "preemptionPolicy", OptStr),
        f(35, "setHostnameAsFQDN", OptBool),
        f(37, "hostUsers", OptBool),
    ],
};

static CONTAINER: Msg = Msg {
    name: "Container",
    fields: &[
        f(1, "name", Str),
        f(2, "image", Str),
        r(3, "command", Str),
        r(4, "args", Str),
        f(5, "workingDir", Str),
        r(6, "ports", Msg(&CONTAINER_PORT)),
        r(7, "env", Msg(&ENV_VAR)),
        f(8, "resources", Msg(&RESOURCE_REQUIREMENTS)),
        f(13, "terminationMessagePath", Str),
        f(14, "imagePullPolicy", Str),
        f(16, "stdin", Bool),
        f(17, "stdinOnce", Bool),
        f(18, "tty", Bool),
        f(20, "terminationMessagePolicy", Str),
        f(24, "restartPolicy", OptStr),
    ],
};

static CONTAINER_PORT: Msg = Msg {
    name: "ContainerPort",
    fields: &[
        f(1, "name", Str),
        f(2, "hostPort", Int),
        f(3, "containerPort", Int),
        f(4, "protocol", Str),
        f(5, "hostIP", Str),
    ],
};

static ENV_VAR: Msg = Msg {
    name: "EnvVar",
    fields: &[
        f(1, "name", Str),
        f(2, "value", Str),
        f(3, "valueFrom", Msg(&ENV_VAR_SOURCE)),
    ],
};

static ENV_VAR_SOURCE: Msg = Msg {
    name: "EnvVarSource",
    fields: &[
        f(1, "fieldRef", Msg(&OBJECT_FIELD_SELECTOR)),
        f(2, "resourceFieldRef", Msg(&RESOURCE_FIELD_SELECTOR)),
        f(3, "configMapKeyRef", Msg(&KEY_SELECTOR)),
        f(4, "secretKeyRef", Msg(&KEY_SELECTOR)),
    ],
};

static OBJECT_FIELD_SELECTOR: Msg = Msg {
    name: "ObjectFieldSelector",
    fields: &[f(1, "apiVersion", Str), f(2, "fieldPath", Str)],
};

static RESOURCE_FIELD_SELECTOR: Msg = Msg {
    name: "ResourceFieldSelector",
    fields: &[
        f(1, "containerName", Str),
        f(2, "resource", Str),
        f(3, "divisor", Quantity),
    ],
};

/// ConfigMapKeySelector and SecretKeySelector share their layout.
static KEY_SELECTOR: Msg = Msg {
    name: "KeySelector",
    fields: &[
        f(1, "localObjectReference", Inline(&LOCAL_OBJECT_REFERENCE)),
        f(2, "key", Str),
        f(3, "optional", OptBool),
    ],
};

static LOCAL_OBJECT_REFERENCE: Msg = Msg {
    name: "LocalObjectReference",
    fields: &[f(1, "name", Str)],
};

static RESOURCE_REQUIREMENTS: Msg = Msg {
    name: "ResourceRequirements",
    fields: &[
        f(1, "limits", MapQuantity),
        f(2, "requests", MapQuantity),
        r(3, "claims", Msg(&RESOURCE_CLAIM)),
    ],
};

static RESOURCE_CLAIM: Msg = Msg {
    name: "ResourceClaim",
    fields: &[f(1, "name", Str), f(2, "request", Str)],
};

static TOLERATION: Msg = Msg {
    name: "Toleration",
    fields: &[
        f(1, "key", Str),
        f(2, "operator", Str),
        f(3, "value", Str),
        f(4, "effect", Str),
        f(5, "tolerationSeconds", OptInt),
    ],
};

// k8s.io/api/apps/v1

pub static DEPLOYMENT: Msg = Msg {
    name: "Deployment",
    fields: &[
        f(1, "metadata", Msg(&OBJECT_META)),
        f(2, "spec", Msg(&DEPLOYMENT_SPEC)),
        f(3, "status", Msg(&DEPLOYMENT_STATUS)),
    ],
};

static DEPLOYMENT_SPEC: Msg = Msg {
    name: "DeploymentSpec",
    fields: &[
        f(1, "replicas", OptInt),
        f(2, "selector", Msg(&LABEL_SELECTOR)),
        f(3, "template", Msg(&POD_TEMPLATE_SPEC)),
        f(4, "strategy", Msg(&DEPLOYMENT_STRATEGY)),
        f(5, "minReadySeconds", Int),
        f(6, "revisionHistoryLimit", OptInt),
        f(7, "paused", Bool),
        f(9, "progressDeadlineSeconds", OptInt),
    ],
};

static DEPLOYMENT_STRATEGY: Msg = Msg {
    name: "DeploymentStrategy",
    fields: &[
        f(1, "type", Str),
        f(2, "rollingUpdate", Msg(&ROLLING_UPDATE_DEPLOYMENT)),
    ],
};

static ROLLING_UPDATE_DEPLOYMENT: Msg = Msg {
    name: "RollingUpdateDeployment",
    fields: &[
        f(1, "maxUnavailable", IntOrString),
        f(2, "maxSurge", IntOrString),
    ],
};

static DEPLOYMENT_STATUS: Msg = Msg {
    name: "DeploymentStatus",
    fields: &[
        f(1, "observedGeneration", Int),
        f(2, "replicas", Int),
        f(3, "updatedReplicas", Int),
        f(4, "availableReplicas", Int),
        f(5, "unavailableReplicas", Int),
        f(7, "readyReplicas", Int),
        f(8, "collisionCount", OptInt),
        f(9, "terminatingReplicas", OptInt),
    ],
};

/// The top-level message of `apiVersion`/`kind`, when its protobuf form is decoded.
pub fn kind(api_version: &str, kind: &str) -> Option<&'static Msg> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "ConfigMap") => &CONFIG_MAP,
        ("v1", "Secret") => &SECRET,
        ("v1", "Service") => &SERVICE,
        ("v1", "Pod") => &POD,
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        _ => return None,
    })
}

/// The kinds [`kind`] knows, for error messages.
pub const KINDS: &str = "v1 Namespace, ConfigMap, Secret, Service, Pod and apps/v1 Deployment";

"""The kinds the Kubernetes API stand-in (kube-api-standin.py) serves, and
what describes them to clients: discovery (legacy and aggregated) and
OpenAPI v3, plus the strict field check helm asks for."""
from kube_api_wire import ApiError


# group, version, kind, plural, namespaced, has status subresource
RESOURCES = [
    ("", "v1", "Namespace", "namespaces", False, True),
    ("", "v1", "Secret", "secrets", True, False),
    ("", "v1", "ConfigMap", "configmaps", True, False),
    ("", "v1", "Service", "services", True, True),
    ("", "v1", "ServiceAccount", "serviceaccounts", True, False),
    ("", "v1", "Pod", "pods", True, True),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, True),
    ("", "v1", "Event", "events", True, False),
    ("", "v1", "Endpoints", "endpoints", True, False),
    ("apps", "v1", "Deployment", "deployments", True, True),
    ("apps", "v1", "StatefulSet", "statefulsets", True, True),
    ("apps", "v1", "ReplicaSet", "replicasets", True, True),
    ("apps", "v1", "DaemonSet", "daemonsets", True, True),
    ("batch", "v1", "Job", "jobs", True, True),
    ("batch", "v1", "CronJob", "cronjobs", True, True),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", True, False),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True, False),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, False),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, False),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", True, True),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, True),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", True, True),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False, True),
]
BY_PLURAL = {(g, v, p): (g, v, k, p, ns, st) for g, v, k, p, ns, st in RESOURCES}
GROUPS = []
for g, v, *_ in RESOURCES:
    if g and (g, v) not in GROUPS:
        GROUPS.append((g, v))



# ---------------------------------------------------------------- discovery
def api_resource_list(g, v):
    res = []
    for rg, rv, kind, plural, namespaced, status in RESOURCES:
        if (rg, rv) != (g, v):
            continue
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        res.append({"name": plural, "singularName": kind.lower(), "namespaced": namespaced,
                    "kind": kind, "verbs": verbs})
        if status:
            res.append({"name": plural + "/status", "singularName": "", "namespaced": namespaced,
                        "kind": kind, "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{g}/{v}" if g else v, "resources": res}


def aggregated(groups):
    items = []
    for g, v in groups:
        resources = []
        for rg, rv, kind, plural, namespaced, status in RESOURCES:
            if (rg, rv) != (g, v):
                continue
            r = {"resource": plural, "responseKind": {"group": g, "version": v, "kind": kind},
                 "scope": "Namespaced" if namespaced else "Cluster", "singularResource": kind.lower(),
                 "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]}
            if status:
                r["subresources"] = [{"subresource": "status", "responseKind": {"group": g, "version": v, "kind": kind},
                                      "verbs": ["get", "patch", "update"]}]
            resources.append(r)
        items.append({"metadata": {"name": g, "creationTimestamp": None},
                      "versions": [{"version": v, "resources": resources, "freshness": "Current"}]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items}


def gv_path(g, v):
    return f"apis/{g}/{v}" if g else "api/v1"


def openapi_root():
    return {"paths": {gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{gv_path(g, v)}?hash={HASH}"}
                      for g, v in [("", "v1")] + GROUPS}}


def openapi_gv(g, v):
    """Per group-version OpenAPI v3: every PATCH operation declares the
    `fieldValidation` query parameter, so helm (like kubectl) leaves field
    validation to the server (`?fieldValidation=Strict`), which the
    stand-in enforces on the fields in TOP_LEVEL_FIELDS."""
    paths, schemas = {}, {}
    for rg, rv, kind, plural, namespaced, _ in RESOURCES:
        if (rg, rv) != (g, v):
            continue
        gvk = {"group": g, "version": v, "kind": kind}
        base = "/" + gv_path(g, v) + ("/namespaces/{namespace}" if namespaced else "")
        params = [{"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        paths[f"{base}/{plural}/{{name}}"] = {
            "get": {"x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
            "put": {"x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": params},
            "patch": {"x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "parameters": params},
            "delete": {"x-kubernetes-action": "delete", "x-kubernetes-group-version-kind": gvk}}
        paths[f"{base}/{plural}"] = {
            "post": {"x-kubernetes-action": "post", "x-kubernetes-group-version-kind": gvk, "parameters": params}}
        prefix = "io.k8s.api.core.v1" if not g else f"io.k8s.api.{g.split('.')[0]}.{v}"
        schemas[f"{prefix}.{kind}"] = {
            "type": "object", "x-kubernetes-group-version-kind": [gvk],
            "properties": {f: {"type": "object"} if f not in ("apiVersion", "kind") else {"type": "string"}
                           for f in TOP_LEVEL_FIELDS.get(kind, ()) + ("apiVersion", "kind", "metadata")}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
            "paths": paths, "components": {"schemas": schemas}}


HASH = "0123456789ABCDEF"
TOP_LEVEL_FIELDS = {
    "Secret": ("data", "stringData", "type", "immutable"),
    "ConfigMap": ("data", "binaryData", "immutable"),
    "ServiceAccount": ("secrets", "imagePullSecrets", "automountServiceAccountToken"),
    "Role": ("rules",), "ClusterRole": ("rules", "aggregationRule"),
    "RoleBinding": ("subjects", "roleRef"), "ClusterRoleBinding": ("subjects", "roleRef"),
    "Event": ("involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count",
              "type", "eventTime", "series", "action", "related", "reportingComponent", "reportingInstance"),
    "Endpoints": ("subsets",),
}
META_FIELDS = {"name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
               "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences",
               "finalizers", "managedFields", "selfLink"}


def strict_fields(obj, kind, q):
    """`fieldValidation=Strict` (what helm asks for): unknown top-level and
    metadata fields are refused as the real API refuses them."""
    if q.get("fieldValidation") != "Strict":
        return
    allowed = set(TOP_LEVEL_FIELDS.get(kind, ("spec", "status"))) | {"apiVersion", "kind", "metadata"}
    bad = [k for k in obj if k not in allowed] + [f"metadata.{k}" for k in obj.get("metadata", {}) if k not in META_FIELDS]
    if bad:
        raise ApiError(400, "BadRequest", "strict decoding error: " + ", ".join(f'unknown field "{b}"' for b in bad))


def check_crd(obj):
    """What the real API server refuses in an apiextensions.k8s.io/v1 CRD
    (v1beta1 is not served at all since Kubernetes 1.22)."""
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    name = (obj.get("metadata") or {}).get("name")
    bad = []
    if not spec.get("group"):
        bad.append("spec.group: Required value")
    if not names.get("plural") or not names.get("kind"):
        bad.append("spec.names.plural, spec.names.kind: Required value")
    elif name != f"{names['plural']}.{spec.get('group')}":
        bad.append(f"metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group")
    if spec.get("scope") not in ("Namespaced", "Cluster"):
        bad.append("spec.scope: Unsupported value")
    versions = spec.get("versions") or []
    if not versions:
        bad.append("spec.versions: Invalid value: must have exactly one version marked as storage version")
    elif sum(1 for v in versions if v.get("storage")) != 1:
        bad.append("spec.versions: Invalid value: must have exactly one version marked as storage version")
    for i, v in enumerate(versions):
        if not ((v.get("schema") or {}).get("openAPIV3Schema")) and not ((spec.get("validation") or {}).get("openAPIV3Schema")):
            bad.append(f"spec.versions[{i}].schema.openAPIV3Schema: Required value: schemas are required")
    if bad:
        raise ApiError(422, "Invalid", f'CustomResourceDefinition.apiextensions.k8s.io "{name}" is invalid: ' + ", ".join(bad))


def serve_crd(obj):
    """Serve the kinds of a stored CRD, as the real server does once the
    CRD is established: discovery, OpenAPI and the REST paths."""
    spec = obj.get("spec") or {}
    g, names = spec["group"], spec["names"]
    for v in spec.get("versions") or []:
        if not v.get("served"):
            continue
        entry = (g, v["name"], names["kind"], names["plural"], spec["scope"] == "Namespaced",
                 "status" in (v.get("subresources") or {}))
        old = BY_PLURAL.get((g, v["name"], names["plural"]))
        if old:
            RESOURCES.remove(old)
        RESOURCES.append(entry)
        BY_PLURAL[(g, v["name"], names["plural"])] = entry
        if (g, v["name"]) not in GROUPS:
            GROUPS.append((g, v["name"]))


AGG_CT = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

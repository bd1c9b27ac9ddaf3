#!/usr/bin/env python3
"""A small Kubernetes API server for tests and the demo (Python 3.11 stdlib).

Why: no real API server can run here, and `bundler upgrade` must be tested
against the real helm v3 and v4. So the stand-in sits *below* helm: helm talks
to it through a kubeconfig exactly as it would to a cluster, and every release
record, revision, `get values`, `history`, `rollback` and `--wait` is real
helm's. It serves what helm needs and is strict where the real API is strict:

- /version, discovery (/api, /apis, /api/v1, /apis/G/V, and the aggregated
  form `apidiscovery.k8s.io/v2` when the Accept header asks for it);
- get/list/watch/create/update/patch/delete for the kinds in RESOURCES, in
  namespaces that must exist; label and field selectors; resourceVersion
  conflicts (409); unknown paths and kinds 404; unknown patch types 415;
  malformed or inapplicable patches 422; strategic merge patch (with its
  `$patch`/`$setElementOrder`/`$retainKeys`/`$deleteFromPrimitiveList`
  directives and the merge keys of the built-in types), JSON merge patch,
  JSON patch, and server-side apply (`application/apply-patch+yaml` with a
  fieldManager; JSON bodies only — YAML needs a parser the stdlib lacks);
- CustomResourceDefinitions (apiextensions.k8s.io/v1 only, checked as the
  real server checks them): once stored, their served versions are served
  (discovery, OpenAPI, REST) like the built-in kinds;
- a controller loop that makes Deployments (with their ReplicaSets),
  StatefulSets, DaemonSets and Jobs ready READY_DELAY seconds after a spec
  change — or never for Deployments/StatefulSets whose labels match the
  selector set with `PUT /standin/never-ready` (so a rollback is exercised
  by a real helm `--wait` timeout);
- `PUT /standin/hang-writes` (body `true`/`false`): from then on every
  write request is accepted but never answered (a hung cluster mid-upgrade).

The kinds, discovery and OpenAPI live in kube_api_kinds.py; selectors,
protobuf and the patch types in kube_api_wire.py (beside this script).

`--hang` starts a server that accepts connections and never answers at all.
The chosen port is printed on stdout's first line; every request is logged
to --log as `METHOD PATH?QUERY CONTENT-TYPE -> STATUS`.
"""
import argparse
import base64
import copy
import hashlib
import json
import re
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

READY_DELAY = 1.0

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from kube_api_kinds import (AGG_CT, BY_PLURAL, GROUPS, aggregated, api_resource_list, check_crd,
                            openapi_gv, openapi_root, serve_crd, strict_fields)
from kube_api_wire import (ApiError, decode_protobuf, fields_match, json_merge, json_patch, labels_match, now,
                           parse_field_selector, parse_label_selector, status_body, strategic_merge)


# ---------------------------------------------------------------- the store
class Store:
    def __init__(self):
        self.lock = threading.Condition()
        self.rv = 100
        self.objects = {}  # (group, plural, ns, name) -> obj
        self.events = []   # (rv, type, key, obj)
        self.changed_at = {}  # key -> time of the last spec change
        self.never_ready = []
        self.hang_writes = False
        for ns in ("default", "kube-system", "kube-public"):
          with self.lock:
            self._put(("", "namespaces", "", ns), self._new_meta({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, ("", "v1", "Namespace", "namespaces", False, True)), "ADDED")

    def _bump(self):
        self.rv += 1
        return str(self.rv)

    def _put(self, key, obj, etype):
        self.objects[key] = obj
        if key[:2] == ("apiextensions.k8s.io", "customresourcedefinitions"):
            serve_crd(obj)
        self.events.append((int(obj["metadata"]["resourceVersion"]), etype, key, copy.deepcopy(obj)))
        if len(self.events) > 5000:
            del self.events[:1000]
        self.lock.notify_all()

    def _new_meta(self, obj, res):
        md = obj.setdefault("metadata", {})
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now()
        md["resourceVersion"] = self._bump()
        if "spec" in obj or res[2] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet", "CronJob"):
            md["generation"] = 1
        return obj


def defaults(obj, kind):
    spec = obj.get("spec")
    if kind in ("Deployment", "StatefulSet", "ReplicaSet") and isinstance(spec, dict):
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
    if kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    if kind == "StatefulSet" and isinstance(spec, dict):
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        spec.setdefault("podManagementPolicy", "OrderedReady")
    if kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        if spec["type"] != "ExternalName":
            spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports", []) or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
    if kind == "Secret":
        obj.setdefault("type", "Opaque")
        sd = obj.pop("stringData", None)
        if sd:
            obj.setdefault("data", {})
            for k, v in sd.items():
                obj["data"][k] = base64.b64encode(str(v).encode()).decode()
    if kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}


def validate(obj, res, ns, name=None):
    g, v, kind, plural, namespaced, _ = res
    api_version = f"{g}/{v}" if g else v
    if not isinstance(obj, dict):
        raise ApiError(400, "BadRequest", "the body of the request is not a JSON object")
    if obj.get("kind") != kind or obj.get("apiVersion") != api_version:
        raise ApiError(400, "BadRequest",
                       f"the API version in the data ({obj.get('apiVersion')}) or kind ({obj.get('kind')}) does not match the expected {api_version} {kind}")
    md = obj.get("metadata")
    if not isinstance(md, dict) or not md.get("name"):
        raise ApiError(422, "Invalid", f"{kind} is invalid: metadata.name: Required value: name is required")
    if not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", md["name"]) or len(md["name"]) > 253:
        raise ApiError(422, "Invalid", f"{kind} \"{md['name']}\" is invalid: metadata.name: Invalid value")
    if name is not None and md["name"] != name:
        raise ApiError(400, "BadRequest", f"the name of the object ({md['name']}) does not match the name on the URL ({name})")
    if namespaced:
        if md.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
        md["namespace"] = ns
    else:
        md.pop("namespace", None)
    for k in ("labels", "annotations"):
        if md.get(k) is not None and (not isinstance(md[k], dict) or not all(isinstance(x, str) for x in md[k].values())):
            raise ApiError(400, "BadRequest", f"metadata.{k} must be a map of strings")
    if kind == "Secret":
        for k, val in (obj.get("data") or {}).items():
            try:
                base64.b64decode(val, validate=True)
            except Exception:
                raise ApiError(400, "BadRequest", f"Secret data {k}: illegal base64 data")
    if kind == "CustomResourceDefinition":
        check_crd(obj)
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        spec = obj.get("spec") or {}
        sel = (spec.get("selector") or {}).get("matchLabels")
        tl = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not sel:
            raise ApiError(422, "Invalid", f"{kind}.apps \"{md['name']}\" is invalid: spec.selector: Required value")
        if any(tl.get(k) != v for k, v in sel.items()):
            raise ApiError(422, "Invalid", f"{kind}.apps \"{md['name']}\" is invalid: spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`")
        if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
            raise ApiError(422, "Invalid", f"{kind}.apps \"{md['name']}\" is invalid: spec.template.spec.containers: Required value")


class Api:
    def __init__(self, store):
        self.s = store

    # ------------------------------------------------------------ routing
    def route(self, path):
        """(res, ns, name, subresource) for an object path; raise 404 otherwise."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["api"] and parts[1:2] == ["v1"]:
            g, v, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            g, v, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns = ""
        if len(rest) >= 3 and rest[0] == "namespaces":
            ns, rest = rest[1], rest[2:]
        elif len(rest) == 2 and rest[0] == "namespaces" and g == "":
            return BY_PLURAL[("", "v1", "namespaces")], "", rest[1], None
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = BY_PLURAL.get((g, v, rest[0]))
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "status" and not res[5]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if ns and not res[4]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name and res[4] and not ns:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, ns, name, sub

    def key(self, res, ns, name):
        return (res[0], res[3], ns if res[4] else "", name)

    def not_found(self, res, name):
        g = res[0]
        what = f"{res[3]}.{g}" if g else res[3]
        return ApiError(404, "NotFound", f'{what} "{name}" not found')

    def need_namespace(self, res, ns):
        if res[4] and ("", "namespaces", "", ns) not in self.s.objects:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')

    # ------------------------------------------------------------ verbs
    def get(self, res, ns, name):
        with self.s.lock:
            obj = self.s.objects.get(self.key(res, ns, name))
            if obj is None:
                raise self.not_found(res, name)
            return copy.deepcopy(obj)

    def list(self, res, ns, q):
        lsel = parse_label_selector(q.get("labelSelector", ""))
        fsel = parse_field_selector(q.get("fieldSelector", ""))
        with self.s.lock:
            items = [copy.deepcopy(o) for (g, p, n, _), o in sorted(self.s.objects.items())
                     if (g, p) == (res[0], res[3]) and (not ns or n == ns)
                     and labels_match(lsel, o["metadata"].get("labels")) and fields_match(fsel, o)]
            rv = str(self.s.rv)
        api_version = f"{res[0]}/{res[1]}" if res[0] else res[1]
        return {"kind": res[2] + "List", "apiVersion": api_version,
                "metadata": {"resourceVersion": rv}, "items": items}

    def create(self, res, ns, obj, q, operation="Update"):
        validate(obj, res, ns)
        strict_fields(obj, res[2], q)
        obj["metadata"].pop("resourceVersion", None)
        if res[5] and res[2] != "Namespace":
            obj.pop("status", None)
        defaults(obj, res[2])
        dry = q.get("dryRun") == "All"
        with self.s.lock:
            self.need_namespace(res, ns)
            key = self.key(res, ns, obj["metadata"]["name"])
            if key in self.s.objects:
                what = f"{res[3]}.{res[0]}" if res[0] else res[3]
                raise ApiError(409, "AlreadyExists", f'{what} "{key[3]}" already exists')
            if res[2] == "Service" and obj["spec"].get("type") != "ExternalName" and not obj["spec"].get("clusterIP"):
                n = len([k for k in self.s.objects if k[1] == "services"]) + 10
                obj["spec"]["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
                obj["spec"]["clusterIPs"] = [obj["spec"]["clusterIP"]]
            self.s._new_meta(obj, res)
            self.manage(obj, q, operation)
            if not dry:
                self.s._put(key, obj, "ADDED")
                self.s.changed_at[key] = time.time()
            return copy.deepcopy(obj)

    def manage(self, obj, q, operation):
        mgr = q.get("fieldManager") or "unknown"
        md = obj["metadata"]
        entries = [e for e in md.get("managedFields", []) if not (e.get("manager") == mgr and e.get("operation") == operation)]
        entries.append({"manager": mgr, "operation": operation, "apiVersion": obj["apiVersion"],
                        "time": now(), "fieldsType": "FieldsV1", "fieldsV1": {}})
        md["managedFields"] = entries

    def replace(self, res, ns, name, new, q, sub=None, existing=None):
        """PUT semantics shared by update, patch and apply."""
        validate(new, res, ns, name)
        strict_fields(new, res[2], q)
        dry = q.get("dryRun") == "All"
        with self.s.lock:
            key = self.key(res, ns, name)
            cur = self.s.objects.get(key)
            if cur is None:
                raise self.not_found(res, name)
            want_rv = new["metadata"].get("resourceVersion")
            if want_rv and want_rv != cur["metadata"]["resourceVersion"]:
                what = f"{res[3]}.{res[0]}" if res[0] else res[3]
                raise ApiError(409, "Conflict",
                               f'Operation cannot be fulfilled on {what} "{name}": the object has been modified; please apply your changes to the latest version and try again')
            if sub == "status":
                out = copy.deepcopy(cur)
                out["status"] = new.get("status")
            else:
                out = new
                if res[5]:
                    if "status" in cur:
                        out["status"] = copy.deepcopy(cur["status"])
                    else:
                        out.pop("status", None)
                defaults(out, res[2])
                if res[2] == "Service":
                    for f in ("clusterIP", "clusterIPs"):
                        if f in cur.get("spec", {}):
                            out.setdefault("spec", {})[f] = cur["spec"][f]
            for f in ("uid", "creationTimestamp", "generation"):
                if f in cur["metadata"]:
                    out["metadata"][f] = cur["metadata"][f]
                else:
                    out["metadata"].pop(f, None)
            out["metadata"].setdefault("managedFields", cur["metadata"].get("managedFields", []))
            if sub is None and out.get("spec") != cur.get("spec") and "generation" in cur["metadata"]:
                out["metadata"]["generation"] = cur["metadata"]["generation"] + 1
            same = {k: v for k, v in out.items() if k != "metadata"} == {k: v for k, v in cur.items() if k != "metadata"} \
                and out["metadata"].get("labels") == cur["metadata"].get("labels") \
                and out["metadata"].get("annotations") == cur["metadata"].get("annotations") \
                and out["metadata"].get("ownerReferences") == cur["metadata"].get("ownerReferences")
            if same:
                out["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
                return copy.deepcopy(cur) if not dry else out
            out["metadata"]["resourceVersion"] = self.s._bump()
            if not dry:
                self.s._put(key, out, "MODIFIED")
                if out.get("spec") != cur.get("spec"):
                    self.s.changed_at[key] = time.time()
            return copy.deepcopy(out)

    def patch(self, res, ns, name, ctype, body, q, sub):
        ctype = (ctype or "").split(";")[0].strip()
        if ctype == "application/apply-patch+yaml":
            return self.apply(res, ns, name, body, q, sub)
        try:
            p = json.loads(body or b"null")
        except ValueError as e:
            raise ApiError(422, "Invalid", f"error decoding patch: {e}")
        with self.s.lock:
            cur = self.get(res, ns, name)
            if ctype == "application/strategic-merge-patch+json":
                new = strategic_merge(cur, p)
            elif ctype == "application/merge-patch+json":
                if not isinstance(p, dict):
                    raise ApiError(422, "Invalid", "merge patch: expected a JSON object")
                new = json_merge(cur, p)
            elif ctype == "application/json-patch+json":
                new = json_patch(cur, p)
            else:
                raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json")
            if not isinstance(new, dict):
                raise ApiError(422, "Invalid", "the patch does not leave an object")
            new["metadata"].setdefault("resourceVersion", cur["metadata"]["resourceVersion"])
            if new["metadata"]["resourceVersion"] == cur["metadata"]["resourceVersion"]:
                new["metadata"].pop("resourceVersion")
            self.manage(new, q, "Update")
            return self.replace(res, ns, name, new, q, sub)

    def apply(self, res, ns, name, body, q, sub):
        """Server-side apply with one owner per field: the applied object
        replaces what that manager applied before; status and the
        server-assigned fields stay."""
        if not q.get("fieldManager"):
            raise ApiError(400, "BadRequest", "PATCH /apply requires fieldManager to be set")
        try:
            obj = json.loads(body)
        except ValueError:
            raise ApiError(415, "UnsupportedMediaType", "this stand-in reads apply patches in JSON form only")
        if not isinstance(obj, dict):
            raise ApiError(422, "Invalid", "apply patch: expected an object")
        validate(copy.deepcopy(obj), res, ns, name)
        with self.s.lock:
            key = self.key(res, ns, name)
            if key not in self.s.objects:
                return self.create(res, ns, obj, q, "Apply")
            cur = self.s.objects[key]
            new = copy.deepcopy(obj)
            # metadata the applier did not set survives (other managers')
            md = new["metadata"]
            for f in ("finalizers", "ownerReferences"):
                if f not in md and f in cur["metadata"]:
                    md[f] = copy.deepcopy(cur["metadata"][f])
            if sub == "status":
                return self.replace(res, ns, name, new, q, sub)
            self.manage(new, q, "Apply")
            new["metadata"].pop("resourceVersion", None)
            return self.replace(res, ns, name, new, q, sub)

    def delete(self, res, ns, name, q):
        dry = q.get("dryRun") == "All"
        with self.s.lock:
            key = self.key(res, ns, name)
            obj = self.s.objects.get(key)
            if obj is None:
                raise self.not_found(res, name)
            if not dry:
                self._remove(key)
            return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "kind": res[3], "uid": obj["metadata"]["uid"]}}

    def _remove(self, key):
        obj = self.s.objects.pop(key)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self.s._bump()
        self.s.events.append((int(obj["metadata"]["resourceVersion"]), "DELETED", key, obj))
        self.s.changed_at.pop(key, None)
        self.s.lock.notify_all()
        uid = obj["metadata"]["uid"]
        # garbage collection of dependents, and of a namespace's contents
        for k, o in list(self.s.objects.items()):
            if k not in self.s.objects:
                continue
            owned = any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))
            if owned or (key[1] == "namespaces" and k[2] == key[3]):
                self._remove(k)


# ---------------------------------------------------------------- controllers
def template_hash(tpl):
    return hashlib.sha256(json.dumps(tpl, sort_keys=True).encode()).hexdigest()[:10]


def reconcile(api):
    s = api.s
    with s.lock:
        t = time.time()
        for key, obj in list(s.objects.items()):
            kind = obj.get("kind")
            if kind not in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
                continue
            never = any(labels_match(sel, obj["metadata"].get("labels")) for sel in s.never_ready) \
                and kind in ("Deployment", "StatefulSet")
            ready = not never and t - s.changed_at.get(key, 0) >= READY_DELAY
            spec = obj.get("spec") or {}
            n = spec.get("replicas", 1)
            gen = obj["metadata"].get("generation", 1)
            if kind == "Deployment":
                rs_key = reconcile_replicaset(api, key, obj, n if ready else 0)
                st = {"observedGeneration": gen, "replicas": n, "updatedReplicas": n,
                      "readyReplicas": n if ready else 0, "availableReplicas": n if ready else 0,
                      "conditions": [
                          {"type": "Available", "status": "True" if ready else "False",
                           "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable"},
                          {"type": "Progressing", "status": "True",
                           "reason": "NewReplicaSetAvailable" if ready else "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{rs_key[3]}" has successfully progressed.' if ready
                           else f'ReplicaSet "{rs_key[3]}" is progressing.'}]}
                if not ready:
                    st["unavailableReplicas"] = n
                    for c in st["conditions"]:
                        c.pop("message", None)
            elif kind == "StatefulSet":
                rev = obj["metadata"]["name"] + "-" + template_hash(spec.get("template"))
                st = {"observedGeneration": gen, "replicas": n, "availableReplicas": n if ready else 0,
                      "readyReplicas": n if ready else 0, "currentReplicas": n if ready else 0,
                      "updatedReplicas": n if ready else 0, "updateRevision": rev,
                      "currentRevision": rev if ready else obj.get("status", {}).get("currentRevision", "")}
            elif kind == "DaemonSet":
                st = {"observedGeneration": gen, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                      "numberReady": 1 if ready else 0, "updatedNumberScheduled": 1,
                      "numberAvailable": 1 if ready else 0, "numberMisscheduled": 0}
            else:  # Job
                st = {"active": 0 if ready else 1}
                if ready:
                    st.update({"succeeded": 1, "startTime": obj.get("status", {}).get("startTime", now()),
                               "completionTime": now(),
                               "conditions": [{"type": "Complete", "status": "True"}]})
                else:
                    st["startTime"] = obj.get("status", {}).get("startTime", now())
            old = obj.get("status") or {}
            comparable = {k: v for k, v in old.items() if k != "completionTime"}
            if comparable != {k: v for k, v in st.items() if k != "completionTime"}:
                new = copy.deepcopy(obj)
                new["status"] = st
                new["metadata"]["resourceVersion"] = s._bump()
                s._put(key, new, "MODIFIED")


def reconcile_replicaset(api, dkey, dep, ready_n):
    s = api.s
    spec = dep["spec"]
    tpl = copy.deepcopy(spec.get("template") or {})
    h = template_hash(tpl)
    tpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
    name = f"{dep['metadata']['name']}-{h}"
    ns = dep["metadata"]["namespace"]
    key = ("apps", "replicasets", ns, name)
    uid = dep["metadata"]["uid"]
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"],
             "uid": uid, "controller": True, "blockOwnerDeletion": True}
    n = spec.get("replicas", 1)
    for k, o in list(s.objects.items()):
        if k[1] == "replicasets" and k != key and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", [])):
            if o["spec"].get("replicas") != 0:
                o2 = copy.deepcopy(o)
                o2["spec"]["replicas"] = 0
                o2["status"] = {"replicas": 0, "observedGeneration": o2["metadata"]["generation"]}
                o2["metadata"]["resourceVersion"] = s._bump()
                s._put(k, o2, "MODIFIED")
    rs = s.objects.get(key)
    want_spec = {"replicas": n, "selector": {"matchLabels": dict(spec["selector"].get("matchLabels", {}), **{"pod-template-hash": h})},
                 "template": tpl}
    want_status = {"replicas": n, "readyReplicas": ready_n, "availableReplicas": ready_n,
                   "fullyLabeledReplicas": n, "observedGeneration": 1}
    if rs is None:
        rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
              "metadata": {"name": name, "namespace": ns, "labels": dict(tpl["metadata"]["labels"]),
                           "ownerReferences": [owner], "uid": str(uuid.uuid4()), "creationTimestamp": now(),
                           "generation": 1, "resourceVersion": s._bump(),
                           "annotations": {"deployment.kubernetes.io/revision": "1"}},
              "spec": want_spec, "status": want_status}
        s._put(key, rs, "ADDED")
    elif rs["spec"] != want_spec or rs.get("status") != dict(want_status, observedGeneration=rs["metadata"]["generation"]):
        rs = copy.deepcopy(rs)
        if rs["spec"] != want_spec:
            rs["metadata"]["generation"] += 1
        rs["spec"] = want_spec
        rs["status"] = dict(want_status, observedGeneration=rs["metadata"]["generation"])
        rs["metadata"]["resourceVersion"] = s._bump()
        s._put(key, rs, "MODIFIED")
    return key


def controller_loop(api, stop):
    while not stop.is_set():
        reconcile(api)
        stop.wait(0.2)


# ---------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api = None
    log_file = None
    stop = None

    def log_message(self, fmt, *args):
        pass

    def note(self, code):
        if self.log_file:
            with open(self.log_file, "a") as f:
                f.write(f"{self.command} {self.path} {self.headers.get('Content-Type', '-')} -> {code}\n")

    def send_json(self, code, body, ctype="application/json"):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.note(code)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 8 << 20:
            raise ApiError(413, "RequestEntityTooLarge", "request entity too large")
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method):
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        try:
            body = self.body()
            if u.path.startswith("/standin/"):
                return self.admin(method, u.path, body)
            if method != "GET" and self.api.s.hang_writes:
                self.note("hang")
                self.stop.wait()
                return
            self.dispatch(method, u.path, q, body)
        except ApiError as e:
            details = None
            self.send_json(e.code, status_body(e.code, e.reason, e.message, details))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def admin(self, method, path, body):
        s = self.api.s
        if method == "PUT" and path == "/standin/never-ready":
            with s.lock:
                s.never_ready = [parse_label_selector(x) for x in body.decode().splitlines() if x.strip()]
            return self.send_json(200, {"neverReady": body.decode()})
        if method == "PUT" and path == "/standin/hang-writes":
            s.hang_writes = body.strip() == b"true"
            return self.send_json(200, {"hangWrites": s.hang_writes})
        raise ApiError(404, "NotFound", "no such stand-in control")

    def dispatch(self, method, path, q, body):
        accept = self.headers.get("Accept", "")
        if method == "GET" and path == "/version":
            return self.send_json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0",
                                        "gitCommit": "standin", "gitTreeState": "clean",
                                        "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
                                        "compiler": "gc", "platform": "linux/amd64"})
        if method == "GET" and path in ("/api", "/apis"):
            if "as=APIGroupDiscoveryList" in accept and "v=v2" in accept:
                groups = [("", "v1")] if path == "/api" else GROUPS
                return self.send_json(200, aggregated(groups), AGG_CT)
            if path == "/api":
                return self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                       "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in GROUPS]
            return self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if method == "GET" and path == "/openapi/v3":
            return self.send_json(200, openapi_root())
        m = re.match(r"^/openapi/v3/(api/v1|apis/([^/]+)/([^/]+))$", path)
        if method == "GET" and m:
            g, v = (m.group(2) or "", m.group(3) or "v1")
            if g and (g, v) not in GROUPS:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self.send_json(200, openapi_gv(g, v))
        if method == "GET" and path.rstrip("/") == "/api/v1":
            return self.send_json(200, api_resource_list("", "v1"))
        m = re.match(r"^/apis/([^/]+)/([^/]+)/?$", path)
        if method == "GET" and m:
            if (m.group(1), m.group(2)) not in GROUPS:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self.send_json(200, api_resource_list(m.group(1), m.group(2)))
        m = re.match(r"^/apis/([^/]+)/?$", path)
        if method == "GET" and m:
            vs = [(g, v) for g, v in GROUPS if g == m.group(1)]
            if not vs:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            g, v = vs[0]
            return self.send_json(200, {"kind": "APIGroup", "apiVersion": "v1", "name": g,
                                        "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                                        "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}})
        res, ns, name, sub = self.api.route(path)
        if method == "GET" and name is None:
            if q.get("watch") in ("true", "1"):
                return self.watch(res, ns, q)
            return self.send_json(200, self.api.list(res, ns, q))
        if method == "GET":
            return self.send_json(200, self.api.get(res, ns, name))
        if method == "POST" and name is None:
            obj = self.parse_body(body)
            return self.send_json(201, self.api.create(res, ns, obj, q))
        if method == "PUT" and name:
            obj = self.parse_body(body)
            return self.send_json(200, self.api.replace(res, ns, name, obj, q, sub))
        if method == "PATCH" and name:
            existed = self.exists(res, ns, name)
            out = self.api.patch(res, ns, name, self.headers.get("Content-Type"), body, q, sub)
            return self.send_json(200 if existed else 201, out)
        if method == "DELETE" and name:
            return self.send_json(200, self.api.delete(res, ns, name, q))
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource")

    def exists(self, res, ns, name):
        with self.api.s.lock:
            return self.api.key(res, ns, name) in self.api.s.objects

    def parse_body(self, body):
        ct = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if ct == "application/vnd.kubernetes.protobuf":
            return decode_protobuf(body)
        if ct not in ("application/json", ""):
            raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - accepted media types include: application/json")
        try:
            return json.loads(body)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {e}")

    def watch(self, res, ns, q):
        s = self.api.s
        lsel = parse_label_selector(q.get("labelSelector", ""))
        fsel = parse_field_selector(q.get("fieldSelector", ""))
        timeout = float(q.get("timeoutSeconds") or 1800)
        deadline = time.time() + timeout
        rv_param = q.get("resourceVersion", "")
        initial = q.get("sendInitialEvents") == "true"

        def wanted(key, obj):
            return (key[0], key[1]) == (res[0], res[3]) and (not ns or key[2] == ns) \
                and labels_match(lsel, obj["metadata"].get("labels")) and fields_match(fsel, obj)

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.note(200)

        def send(ev):
            data = json.dumps(ev).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        try:
            with s.lock:
                if rv_param in ("", "0") or initial:
                    start = s.rv
                    pending = [{"type": "ADDED", "object": copy.deepcopy(o)}
                               for k, o in sorted(s.objects.items()) if wanted(k, o)]
                    if initial:
                        api_version = f"{res[0]}/{res[1]}" if res[0] else res[1]
                        pending.append({"type": "BOOKMARK", "object": {
                            "kind": res[2], "apiVersion": api_version,
                            "metadata": {"resourceVersion": str(s.rv),
                                         "annotations": {"k8s.io/initial-events-end": "true"}}}})
                else:
                    start = int(rv_param)
                    if s.events and start < s.events[0][0] - 1:
                        pending = [{"type": "ERROR", "object": status_body(410, "Expired", "too old resource version")}]
                        start = None
                    else:
                        pending = []
            for ev in pending:
                send(ev)
            if start is None:
                self.wfile.write(b"0\r\n\r\n")
                return
            while not self.stop.is_set() and time.time() < deadline:
                with s.lock:
                    evs = [(rv, t, k, o) for rv, t, k, o in s.events if rv > start and wanted(k, o)]
                    if not evs:
                        s.lock.wait(min(1.0, max(0.01, deadline - time.time())))
                        evs = [(rv, t, k, o) for rv, t, k, o in s.events if rv > start and wanted(k, o)]
                    if s.events:
                        start = max(start, s.events[-1][0])
                for _, t, _, o in evs:
                    send({"type": t, "object": o})
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


def hang_forever(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)  # never read, never answered


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log")
    ap.add_argument("--hang", action="store_true", help="accept connections, never answer")
    ap.add_argument("--ready-delay", type=float, default=READY_DELAY)
    a = ap.parse_args()
    if a.hang:
        return hang_forever(a.port)
    globals()["READY_DELAY"] = a.ready_delay
    store = Store()
    api = Api(store)
    stop = threading.Event()
    Handler.api, Handler.log_file, Handler.stop = api, a.log, stop
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    threading.Thread(target=controller_loop, args=(api, stop), daemon=True).start()
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    finally:
        stop.set()


if __name__ == "__main__":
    sys.exit(main())

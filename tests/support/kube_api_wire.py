"""Wire formats of the Kubernetes API stand-in (kube-api-standin.py): the
Status error body, label and field selectors, the protobuf envelope helm's
release storage writes, and the patch types (strategic merge with its
directives and merge keys, JSON merge, JSON patch)."""
import base64
import copy
import datetime
import re


class ApiError(Exception):
    def __init__(self, code, reason, message):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def status_body(code, reason, message, details=None):
    b = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
         "message": message, "reason": reason, "code": code}
    if details:
        b["details"] = details
    return b


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- selectors
SEL_RE = re.compile(r"^\s*(!?)([A-Za-z0-9._/-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def split_selector(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(s):
    reqs = []
    for part in split_selector(s or ""):
        m = SEL_RE.match(part)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        neg, key, op, val, setop, setvals = m.groups()
        if neg and (op or setop):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        if neg:
            reqs.append(("!", key, None))
        elif op:
            reqs.append(("!=" if op == "!=" else "=", key, val))
        elif setop:
            reqs.append((setop, key, {x.strip() for x in setvals.split(",") if x.strip()}))
        else:
            reqs.append(("exists", key, None))
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for op, key, val in reqs:
        have = key in labels
        if op == "=" and labels.get(key) != val:
            return False
        if op == "!=" and have and labels[key] == val:
            return False
        if op == "!" and have:
            return False
        if op == "exists" and not have:
            return False
        if op == "in" and labels.get(key) not in val:
            return False
        if op == "notin" and have and labels[key] in val:
            return False
    return True


def parse_field_selector(s):
    reqs = []
    for part in (s or "").split(","):
        if not part.strip():
            continue
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m or m.group(1) not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f"field label not supported: {part}")
        reqs.append((m.group(1), m.group(2) != "!=", m.group(3)))
    return reqs


def fields_match(reqs, obj):
    for field, eq, val in reqs:
        have = obj["metadata"].get(field.split(".")[1], "")
        if (have == val) != eq:
            return False
    return True


# ---------------------------------------------------------------- protobuf
# helm's release storage writes Secrets through client-go's typed client,
# which sends `application/vnd.kubernetes.protobuf`. The real API reads it;
# so does the stand-in, for the kinds helm stores releases in.
PB_MAGIC = b"k8s\x00"


def pb_fields(buf):
    i, out = 0, []
    while i < len(buf):
        key, i = pb_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            val, i = pb_varint(buf, i)
        elif wt == 2:
            n, i = pb_varint(buf, i)
            val, i = buf[i:i + n], i + n
            if i > len(buf):
                raise ValueError("truncated field")
        elif wt == 1:
            val, i = buf[i:i + 8], i + 8
        elif wt == 5:
            val, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wt}")
        out.append((num, val))
    return out


def pb_varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def pb_map(entries):
    out = {}
    for e in entries:
        f = dict(pb_fields(e))
        out[f.get(1, b"").decode()] = f.get(2, b"")
    return out


def pb_object_meta(buf):
    md, labels, ann, fin = {}, [], [], []
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for num, val in pb_fields(buf):
        # gogo-protobuf writes empty strings and zeroes: they mean "unset"
        if num in names:
            if val:
                md[names[num]] = val.decode()
        elif num == 7:
            if val:
                md["generation"] = val
        elif num == 11:
            labels.append(val)
        elif num == 12:
            ann.append(val)
        elif num == 14:
            fin.append(val.decode())
    if labels:
        md["labels"] = {k: v.decode() for k, v in pb_map(labels).items()}
    if ann:
        md["annotations"] = {k: v.decode() for k, v in pb_map(ann).items()}
    if fin:
        md["finalizers"] = fin
    return md


def decode_protobuf(body):
    """A Secret or ConfigMap in the Kubernetes protobuf envelope, as JSON."""
    if not body.startswith(PB_MAGIC):
        raise ApiError(400, "BadRequest", "protobuf body without the k8s envelope")
    try:
        unknown = dict((n, v) for n, v in pb_fields(body[4:]))
        tm = dict(pb_fields(unknown.get(1, b"")))
        api_version, kind = tm.get(1, b"").decode(), tm.get(2, b"").decode()
        fields = pb_fields(unknown.get(2, b""))
        obj = {"apiVersion": api_version, "kind": kind}
        data, string_data = [], []
        for num, val in fields:
            if num == 1:
                obj["metadata"] = pb_object_meta(val)
            elif num == 2:
                data.append(val)
            elif kind == "Secret" and num == 3:
                if val:
                    obj["type"] = val.decode()
            elif kind == "Secret" and num == 4:
                string_data.append(val)
            elif (kind, num) in (("Secret", 5), ("ConfigMap", 3)):
                if val:
                    obj["immutable"] = True
        if kind == "Secret":
            if data:
                obj["data"] = {k: base64.b64encode(v).decode() for k, v in pb_map(data).items()}
            if string_data:
                obj["stringData"] = {k: v.decode() for k, v in pb_map(string_data).items()}
        elif kind == "ConfigMap":
            if data:
                obj["data"] = {k: v.decode() for k, v in pb_map(data).items()}
        else:
            raise ApiError(415, "UnsupportedMediaType", f"this stand-in reads protobuf only for Secret and ConfigMap, not {kind}")
        return obj
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {e}")


# ---------------------------------------------------------------- patches
def json_merge(orig, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(orig) if isinstance(orig, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge(out.get(k), v)
    return out


# strategic-merge-patch merge keys of the built-in types, by list field name
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "imagePullSecrets": "name",
    "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "hostAliases": "ip", "conditions": "type", "ownerReferences": "uid",
    "envFrom": None, "tolerations": None, "args": None, "command": None,
}


def merge_key(field, parent):
    if field == "ports":
        return "containerPort" if parent in ("containers", "initContainers", "ephemeralContainers") else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(orig, patch, parent=None):
    """Apply a strategic merge patch to a map."""
    if not isinstance(patch, dict):
        raise ApiError(422, "Invalid", "strategic merge patch: expected a JSON object")
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise ApiError(422, "Invalid", f"strategic merge patch: unknown $patch directive {directive!r}")
    out = copy.deepcopy(orig) if isinstance(orig, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if not isinstance(v, list):
                raise ApiError(422, "Invalid", f"strategic merge patch: {k} must be a list")
            out[field] = [x for x in out.get(field, []) if x not in v]
            continue
        if k.startswith("$"):
            raise ApiError(422, "Invalid", f"strategic merge patch: unknown directive {k!r}")
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v, k)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = merge_list(out.get(k), v, k, parent)
        else:
            out[k] = v
    if retain is not None:
        if not isinstance(retain, list):
            raise ApiError(422, "Invalid", "strategic merge patch: $retainKeys must be a list")
        out = {k: v for k, v in out.items() if k in retain}
    return out


def merge_list(orig, patch, field, parent):
    key = merge_key(field, parent)
    if key is None or not all(isinstance(x, dict) for x in patch):
        if any(isinstance(x, dict) and "$patch" in x for x in patch):
            raise ApiError(422, "Invalid", f"strategic merge patch: $patch in list {field} without a merge key")
        return copy.deepcopy(patch)
    if any(x.get("$patch") == "replace" for x in patch):
        return [x for x in copy.deepcopy(patch) if "$patch" not in x]
    out = copy.deepcopy(orig) if isinstance(orig, list) else []
    for item in patch:
        if key not in item:
            raise ApiError(422, "Invalid", f"strategic merge patch: an element of {field} lacks its merge key {key!r}")
        idx = next((i for i, o in enumerate(out) if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            out[idx] = strategic_merge(out[idx], item, field)
    return out


def json_patch(orig, ops):
    if not isinstance(ops, list):
        raise ApiError(422, "Invalid", "json patch: expected a list of operations")
    doc = copy.deepcopy(orig)

    def walk(path):
        if not path.startswith("/"):
            raise ApiError(422, "Invalid", f"json patch: bad path {path!r}")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    for op in ops:
        try:
            kind, path = op["op"], op["path"]
            parent, last = walk(path)
            if kind in ("add", "replace"):
                if isinstance(parent, list):
                    i = len(parent) if last == "-" else int(last)
                    if kind == "add":
                        parent.insert(i, op["value"])
                    else:
                        parent[i] = op["value"]
                else:
                    if kind == "replace" and last not in parent:
                        raise KeyError(last)
                    parent[last] = op["value"]
            elif kind == "remove":
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    del parent[last]
            elif kind == "test":
                have = parent[int(last)] if isinstance(parent, list) else parent[last]
                if have != op["value"]:
                    raise ApiError(422, "Invalid", f"json patch: test failed at {path}")
            else:
                raise ApiError(422, "Invalid", f"json patch: unsupported op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(422, "Invalid", f"json patch: cannot apply {op!r}: {e}")
    return doc

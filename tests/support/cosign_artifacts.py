#!/usr/bin/env python3
"""Real cosign-format artifacts for the referrer tests, made and checked
independently of bundler (Python `cryptography` for ECDSA P-256, plain HTTP
to a registry for the distribution API).

Subcommands (REGISTRY is host:port of a plain-HTTP registry):

  keygen DIR NAME
      NAME.key (PKCS#8 PEM) and NAME.pub (SPKI PEM), ECDSA P-256, as
      `cosign generate-key-pair` writes them (unencrypted here).
  sign REGISTRY REPO DIGEST KEY
      cosign's `.sig` layout: a simple-signing payload whose
      critical.image.docker-manifest-digest is DIGEST, signed (ECDSA P-256,
      SHA-256, ASN.1 DER, base64 in the `dev.cosignproject.cosign/signature`
      annotation), pushed under tag sha256-<hex>.sig. Prints the manifest digest.
  attest REGISTRY REPO DIGEST KEY
      cosign's `.att` layout: a DSSE envelope of an in-toto statement with an
      SPDX predicate, under tag sha256-<hex>.att. Prints the manifest digest.
  bundle-referrer REGISTRY REPO DIGEST MEDIA_TYPE SIZE KEY
      a Sigstore-bundle-style OCI 1.1 referrer (artifactType
      application/vnd.dev.sigstore.bundle.v0.3+json, `subject` = DIGEST),
      pushed by digest; when the registry does not answer OCI-Subject, the
      referrers tag fallback index sha256-<hex> is updated (kept entries
      first). Prints the manifest digest.
  verify REGISTRY REPO DIGEST PUB
      the independent check: read the sha256-<hex>.sig manifest and its
      payload from REGISTRY, verify the ECDSA signature with PUB and that
      the payload signs DIGEST. Prints "verified N" or exits 1.
"""
import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "application/vnd.oci.empty.v1+json"


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def req(method, url, body=None, headers=None):
    r = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(r) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def push_blob(reg, repo, data):
    d = sha(data)
    st, _, _ = req("HEAD", f"http://{reg}/v2/{repo}/blobs/{d}")
    if st == 200:
        return d
    st, h, body = req("POST", f"http://{reg}/v2/{repo}/blobs/uploads/")
    assert st == 202, (st, body)
    loc = h.get("Location") or h.get("location")
    if loc.startswith("/"):
        loc = f"http://{reg}{loc}"
    sep = "&" if "?" in loc else "?"
    st, _, body = req("PUT", f"{loc}{sep}digest={d}", data,
                      {"Content-Type": "application/octet-stream"})
    assert st == 201, (st, body)
    return d


def push_manifest(reg, repo, ref, media_type, data):
    st, h, body = req("PUT", f"http://{reg}/v2/{repo}/manifests/{ref}", data,
                      {"Content-Type": media_type})
    assert st == 201, (st, body)
    return {k.lower(): v for k, v in h.items()}


def get_manifest(reg, repo, ref):
    st, h, body = req("GET", f"http://{reg}/v2/{repo}/manifests/{ref}", None,
                      {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    return (body if st == 200 else None)


def get_blob(reg, repo, digest):
    st, _, body = req("GET", f"http://{reg}/v2/{repo}/blobs/{digest}")
    assert st == 200, (st, body)
    assert sha(body) == digest
    return body


def load_key(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), password=None)


def desc(media_type, data, **extra):
    d = {"mediaType": media_type, "digest": sha(data), "size": len(data)}
    d.update(extra)
    return d


def cosign_config(layer_digests):
    # What cosign writes as the config of a .sig/.att manifest.
    return json.dumps({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": layer_digests}, "config": {},
    }, separators=(",", ":")).encode()


def keygen(out_dir, name):
    key = ec.generate_private_key(ec.SECP256R1())
    with open(os.path.join(out_dir, name + ".key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(os.path.join(out_dir, name + ".pub"), "wb") as f:
        f.write(key.public_key().public_bytes(
            serialization.Encoding.PEM,
            serialization.PublicFormat.SubjectPublicKeyInfo))


def sign(reg, repo, digest, key_path):
    key = load_key(key_path)
    payload = json.dumps({
        "critical": {
            "identity": {"docker-reference": f"{reg}/{repo}"},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }, separators=(",", ":")).encode()
    sig = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    push_blob(reg, repo, payload)
    config = cosign_config([sha(payload)])
    push_blob(reg, repo, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc(SIMPLESIGNING, payload, annotations={SIG_ANNOTATION: sig})],
    }, separators=(",", ":")).encode()
    tag = "sha256-" + digest.split(":")[1] + ".sig"
    push_manifest(reg, repo, tag, OCI_MANIFEST, manifest)
    return sha(manifest)


def pae(payload_type, payload):
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def attest(reg, repo, digest, key_path):
    key = load_key(key_path)
    statement = json.dumps({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://spdx.dev/Document",
        "subject": [{"name": f"{reg}/{repo}", "digest": {"sha256": digest.split(":")[1]}}],
        "predicate": {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT",
                      "name": repo, "packages": [{"name": "busybox", "versionInfo": "1.36.1"}]},
    }, separators=(",", ":")).encode()
    ptype = "application/vnd.in-toto+json"
    sig = base64.b64encode(key.sign(pae(ptype, statement), ec.ECDSA(hashes.SHA256()))).decode()
    envelope = json.dumps({"payloadType": ptype,
                           "payload": base64.b64encode(statement).decode(),
                           "signatures": [{"keyid": "", "sig": sig}]},
                          separators=(",", ":")).encode()
    push_blob(reg, repo, envelope)
    config = cosign_config([sha(envelope)])
    push_blob(reg, repo, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": [desc("application/vnd.dsse.envelope.v1+json", envelope,
                        annotations={SIG_ANNOTATION: "",
                                     "predicateType": "https://spdx.dev/Document"})],
    }, separators=(",", ":")).encode()
    tag = "sha256-" + digest.split(":")[1] + ".att"
    push_manifest(reg, repo, tag, OCI_MANIFEST, manifest)
    return sha(manifest)


def bundle_referrer(reg, repo, digest, media_type, size, key_path):
    key = load_key(key_path)
    statement = json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "subject": [{"name": f"{reg}/{repo}", "digest": {"sha256": digest.split(":")[1]}}],
        "predicate": {},
    }, separators=(",", ":")).encode()
    ptype = "application/vnd.in-toto+json"
    sig = base64.b64encode(key.sign(pae(ptype, statement), ec.ECDSA(hashes.SHA256()))).decode()
    bundle = json.dumps({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "test-key"}},
        "dsseEnvelope": {"payload": base64.b64encode(statement).decode(),
                         "payloadType": ptype,
                         "signatures": [{"sig": sig}]},
    }, separators=(",", ":")).encode()
    push_blob(reg, repo, bundle)
    push_blob(reg, repo, b"{}")
    annotations = {"dev.sigstore.bundle.content": "dsse-envelope",
                   "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1",
                   "org.opencontainers.image.created": "2026-01-01T00:00:00Z"}
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPE,
        "config": {"mediaType": EMPTY, "digest": sha(b"{}"), "size": 2},
        "layers": [desc(BUNDLE_TYPE, bundle)],
        "subject": {"mediaType": media_type, "digest": digest, "size": int(size)},
        "annotations": annotations,
    }, separators=(",", ":")).encode()
    h = push_manifest(reg, repo, sha(manifest), OCI_MANIFEST, manifest)
    if "oci-subject" not in h:
        # No referrers API: the client keeps the fallback tag (as oras and
        # cosign do), keeping the entries already there.
        tag = "sha256-" + digest.split(":")[1]
        old = get_manifest(reg, repo, tag)
        entries = json.loads(old)["manifests"] if old else []
        if not any(e["digest"] == sha(manifest) for e in entries):
            entries.append(desc(OCI_MANIFEST, manifest, artifactType=BUNDLE_TYPE,
                                annotations=annotations))
        idx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                          "manifests": entries}, separators=(",", ":")).encode()
        push_manifest(reg, repo, tag, OCI_INDEX, idx)
    return sha(manifest)


def verify(reg, repo, digest, pub_path):
    with open(pub_path, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    tag = "sha256-" + digest.split(":")[1] + ".sig"
    raw = get_manifest(reg, repo, tag)
    if raw is None:
        print(f"no {tag} in {reg}/{repo}", file=sys.stderr)
        return 1
    n = 0
    for layer in json.loads(raw)["layers"]:
        sig = (layer.get("annotations") or {}).get(SIG_ANNOTATION)
        if layer["mediaType"] != SIMPLESIGNING or not sig:
            continue
        payload = get_blob(reg, repo, layer["digest"])
        try:
            pub.verify(base64.b64decode(sig), payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        signed = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
        if signed == digest:
            n += 1
    if n == 0:
        print(f"no signature in {reg}/{repo}:{tag} verifies with {pub_path}", file=sys.stderr)
        return 1
    print(f"verified {n}")
    return 0


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "keygen":
        keygen(*args)
    elif cmd == "sign":
        print(sign(*args))
    elif cmd == "attest":
        print(attest(*args))
    elif cmd == "bundle-referrer":
        print(bundle_referrer(*args))
    elif cmd == "verify":
        return verify(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

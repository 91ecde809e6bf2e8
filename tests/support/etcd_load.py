#!/usr/bin/env python3
"""Fast, deterministic key loader for etcd through its JSON gateway — test support only.

Sends batched transactions (`POST {endpoint}/v3/kv/txn`, puts only, keys and values
base64) over one keep-alive connection. Keys look like Kubernetes objects:

    {prefix}configmaps/ns-<i % 50>/cm-<i:06>      (prefix default /registry/)

or, with --resources N, spread over N resource prefixes as a real cluster has them
(core types, then API groups such as monitoring.coreos.com and CRD-like names):

    {prefix}<resource i % N>/ns-<i % 50>/obj-<i:06>

Values are exactly --value-size bytes of Kubernetes-like JSON text: repeated
structure and vocabulary with varying names, uids, timestamps and base64 tokens,
so that zstd -3 compresses them about 3x (like a real etcd database). The same
--seed, index and size always give the same value.

etcd must accept the batch: start it with --max-txn-ops >= --batch and
--max-request-bytes above --max-batch-bytes (the test harness does).

Usage:
  etcd_load.py --endpoint http://127.0.0.1:2379 --count 2000 --value-size 1024
               [--cacert CA --cert CERT --key KEY] [--prefix /registry/]
               [--batch 200] [--max-batch-bytes 8388608] [--seed 1] [--start 0]
               [--parallel 2]
Prints one summary line on stdout. Stdlib only.
"""

import argparse
import base64
import http.client
import json
import random
import queue
import ssl
import sys
import threading
import time
import urllib.parse

WORDS = (
    "apiVersion kind metadata name namespace labels annotations spec status "
    "containers image imagePullPolicy IfNotPresent resources limits requests cpu "
    "memory ports containerPort protocol TCP volumeMounts mountPath readOnly true "
    "false env value valueFrom secretKeyRef configMapKeyRef nodeSelector "
    "kubernetes.io/os linux tolerations operator Exists effect NoSchedule "
    "serviceAccountName restartPolicy Always dnsPolicy ClusterFirst "
    "terminationGracePeriodSeconds schedulerName default-scheduler priority "
    "managedFields manager kube-controller-manager operation Update fieldsType "
    "FieldsV1 ownerReferences controller blockOwnerDeletion openshift-etcd "
    "openshift-monitoring app.kubernetes.io/name app.kubernetes.io/component"
).split()

TEMPLATE_HEAD = (
    '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-%06d",'
    '"namespace":"ns-%d","uid":"%s","resourceVersion":"%d",'
    '"creationTimestamp":"2026-%02d-%02dT%02d:%02d:%02dZ",'
    '"labels":{"app.kubernetes.io/name":"app-%d","app.kubernetes.io/instance":"inst-%d",'
    '"app.kubernetes.io/managed-by":"operator"},'
    '"annotations":{"checksum/config":"%s"},'
    '"managedFields":[{"manager":"kube-controller-manager","operation":"Update",'
    '"apiVersion":"v1","time":"2026-%02d-%02dT%02d:%02d:%02dZ","fieldsType":"FieldsV1"}]},'
    '"data":{'
)


def make_value(seed, i, size):
    """Deterministic, k8s-JSON-like, ~3x zstd-compressible value of exactly `size` bytes."""
    rng = random.Random(seed * 1_000_003 + i)
    rb = rng.randbytes
    uid = rb(16).hex()
    uid = "%s-%s-%s-%s-%s" % (uid[:8], uid[8:12], uid[12:16], uid[16:20], uid[20:])
    t = [rng.randrange(1, 13), rng.randrange(1, 29), rng.randrange(24),
         rng.randrange(60), rng.randrange(60)]
    head = TEMPLATE_HEAD % (
        i, i % 50, uid, 1000 + i, *t, i % 17, i % 5, rb(32).hex(), *t)
    tail = '"pad":""}}'
    if size <= len(head) + len(tail):
        base = (head + tail)[:size]
        return base.encode()
    parts = [head]
    n = len(head)
    budget = size - len(tail)
    j = 0
    nw = len(WORDS)
    while True:
        idx = rb(10)
        phrase = " ".join(WORDS[b % nw] for b in idx)
        token = base64.b64encode(rb(18 + idx[0] % 20)).decode()
        entry = '"key-%d":"%s %s %d",' % (j, phrase, token, idx[1])
        if n + len(entry) > budget:
            break
        parts.append(entry)
        n += len(entry)
        j += 1
    pad_len = size - n - len(tail)
    parts.append('"pad":"' + ("x" * pad_len) + '"}}')
    v = "".join(parts).encode()
    assert len(v) == size, (len(v), size)
    return v


CORE_RESOURCES = (
    "configmaps secrets pods events services endpointslices serviceaccounts leases "
    "replicasets deployments daemonsets statefulsets jobs cronjobs controllerrevisions "
    "persistentvolumeclaims persistentvolumes namespaces nodes roles rolebindings "
    "clusterroles clusterrolebindings apiregistration.k8s.io apiextensions.k8s.io "
    "minions ranges horizontalpodautoscalers poddisruptionbudgets "
    "priorityclasses csinodes csidrivers storageclasses validatingwebhookconfigurations "
    "mutatingwebhookconfigurations networkpolicies ingress flowschemas "
    "prioritylevelconfigurations masterleases resourcequotas limitranges"
).split()
GROUPS = (
    "monitoring.coreos.com operator.openshift.io config.openshift.io machine.openshift.io "
    "route.openshift.io image.openshift.io security.openshift.io oauth.openshift.io "
    "build.openshift.io apps.openshift.io template.openshift.io quota.openshift.io "
    "console.openshift.io network.openshift.io k8s.ovn.org metal3.io cert-manager.io "
    "velero.io tuned.openshift.io machineconfiguration.openshift.io "
    "operators.coreos.com snapshot.storage.k8s.io autoscaling.openshift.io"
).split()


def resource_names(n):
    """n distinct resource names: the core ones, then <kind-j>.<group> names."""
    names = list(CORE_RESOURCES[:n])
    j = 0
    while len(names) < n:
        names.append("%s-%d" % (GROUPS[j % len(GROUPS)], j // len(GROUPS)))
        j += 1
    return names


def make_key(prefix, i, resources=None):
    if resources:
        return "%s%s/ns-%d/obj-%06d" % (prefix, resources[i % len(resources)], i % 50, i)
    return "%sconfigmaps/ns-%d/cm-%06d" % (prefix, i % 50, i)


class Gateway:
    def __init__(self, endpoint, cacert, cert, key, timeout):
        u = urllib.parse.urlsplit(endpoint)
        if u.hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("etcd_load: refusing non-loopback endpoint %s" % endpoint)
        self.host, self.port, self.scheme = u.hostname, u.port, u.scheme
        self.timeout = timeout
        self.ctx = None
        if u.scheme == "https":
            self.ctx = ssl.create_default_context(cafile=cacert)
            if cert:
                self.ctx.load_cert_chain(cert, key)
        self.conn = None

    def _connect(self):
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port or 2379, timeout=self.timeout, context=self.ctx)
        return http.client.HTTPConnection(self.host, self.port or 2379, timeout=self.timeout)

    def post(self, path, body):
        for attempt in range(3):
            if self.conn is None:
                self.conn = self._connect()
            try:
                self.conn.request("POST", path, body=body,
                                  headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, data
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                time.sleep(0.2 * (attempt + 1))


def main():
    ap = argparse.ArgumentParser(description="load keys into etcd via the JSON gateway")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--cacert")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--value-size", type=int, required=True)
    ap.add_argument("--prefix", default="/registry/")
    ap.add_argument("--batch", type=int, default=200, help="max puts per txn")
    ap.add_argument("--max-batch-bytes", type=int, default=8 * 1024 * 1024,
                    help="max raw key+value bytes per txn")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--start", type=int, default=0, help="first index")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--parallel", type=int, default=2, help="concurrent txn senders")
    ap.add_argument("--resources", type=int, default=0,
                    help="spread keys over this many resource prefixes (0: configmaps only)")
    args = ap.parse_args()
    resources = resource_names(args.resources) if args.resources > 0 else None

    # Batches are generated here and sent by --parallel sender threads, each with
    # its own keep-alive connection, so generation and etcd's work overlap.
    q = queue.Queue(maxsize=max(2, args.parallel))
    errors = []

    def sender():
        gw = Gateway(args.endpoint, args.cacert, args.cert, args.key, args.timeout)
        while True:
            body = q.get()
            if body is None:
                return
            if errors:
                continue
            try:
                status, data = gw.post("/v3/kv/txn", body)
                if status != 200:
                    raise RuntimeError("txn failed with HTTP %d: %s"
                                       % (status, data[:500].decode(errors="replace")))
                reply = json.loads(data)
                if "error" in reply or not reply.get("succeeded", False):
                    raise RuntimeError("txn not applied: %r" % data[:500])
            except Exception as e:  # reported by the main thread
                errors.append(e)

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(args.parallel)]
    for t in threads:
        t.start()

    b64 = base64.b64encode
    t0 = time.monotonic()
    total_bytes = 0
    done = 0
    i = args.start
    end = args.start + args.count
    while i < end and not errors:
        ops = []
        batch_bytes = 0
        while i < end and len(ops) < args.batch:
            k = make_key(args.prefix, i, resources).encode()
            v = make_value(args.seed, i, args.value_size)
            if ops and batch_bytes + len(k) + len(v) > args.max_batch_bytes:
                break
            ops.append('{"requestPut":{"key":"%s","value":"%s"}}'
                       % (b64(k).decode(), b64(v).decode()))
            batch_bytes += len(k) + len(v)
            i += 1
        q.put(('{"success":[' + ",".join(ops) + "]}").encode())
        done += len(ops)
        total_bytes += batch_bytes
    for _ in threads:
        q.put(None)
    for t in threads:
        t.join()
    if errors:
        sys.exit("etcd_load: %s" % errors[0])
    dt = time.monotonic() - t0
    print("etcd_load: put %d keys (%d bytes) in %.2f s: %.0f keys/s, %.1f MB/s"
          % (done, total_bytes, dt, done / dt if dt else 0, total_bytes / 1e6 / dt if dt else 0),
          flush=True)


if __name__ == "__main__":
    main()

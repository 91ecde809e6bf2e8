#!/usr/bin/env python3
"""Differences of etcd /metrics between two scrapes (histogram means and bucket p99s, counters): etcd_metrics_diff.py BEFORE AFTER."""
import sys
from prometheus_client.parser import text_string_to_metric_families
def load(p):
    d={}
    for f in text_string_to_metric_families(open(p).read()):
        for s in f.samples:
            key=s.name+('{'+','.join(f'{k}={v}' for k,v in sorted(s.labels.items()))+'}' if s.labels else '')
            d[key]=s.value
    return d
a,b=load(sys.argv[1]),load(sys.argv[2])
hists=["etcd_disk_wal_fsync_duration_seconds","etcd_disk_backend_commit_duration_seconds",
"etcd_server_apply_duration_seconds","etcd_mvcc_put_duration_seconds","etcd_network_peer_round_trip_time_seconds",
"etcd_disk_backend_snapshot_duration_seconds","etcd_mvcc_db_compaction_pause_duration_milliseconds","go_gc_duration_seconds"]
out=[]
for h in hists:
    cnt=[k for k in b if k.startswith(h+"_count")]
    for ck in cnt:
        lab=ck[len(h+"_count"):]
        n=b.get(ck,0)-a.get(ck,0)
        sm=b.get(h+"_sum"+lab,0)-a.get(h+"_sum"+lab,0)
        if n<=0: continue
        # bucket p99
        buckets=sorted((float(k.split('le=')[1].split(',')[0].rstrip('}')),b[k]-a.get(k,0)) for k in b if k.startswith(h+"_bucket") and (lab.strip('{}') in k))
        p99=None
        for le,c in buckets:
            if c>=0.99*n: p99=le;break
        out.append(f"{h}{lab}: n={n:.0f} mean={sm/n*1000:.2f}ms p99<={p99}")
for k in ["process_cpu_seconds_total","etcd_server_slow_apply_total","etcd_server_slow_read_indexes_total","etcd_debugging_mvcc_slow_watcher_total","go_goroutines","grpc_server_msg_sent_total{grpc_method=Snapshot,grpc_service=etcdserverpb.Maintenance,grpc_type=server_stream}"]:
    if k in b: out.append(f"{k}: {b[k]-a.get(k,0) if 'total' in k else b[k]}")
print("\n".join(out))

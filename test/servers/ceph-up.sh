#!/usr/bin/env bash
# A single-node Ceph (one monitor, one in-memory OSD, radosgw) on 127.0.0.1 as the S3 server for tests:
# auth none, pool size 1, an S3 user, a warm-up PUT/GET. No systemd, no Docker. Adapted from the
# measured recipe in the lab notes (radosgw with auth none needs `ms mon client mode = crc secure`;
# pre-created pools cut radosgw's start from ~18 s to ~7 s; tcp_nodelay cuts small requests to ~10 ms).
#
#   ceph-up.sh start   starts it; writes $LAB/env (S3_ENDPOINT, S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY)
#   ceph-up.sh stop    stops what it started, by the pids it recorded under $LAB
#
# Settings (environment): LAB (state directory, required), MON_PORT, RGW_PORT (free ports, required),
# MS_PORT_MIN/MS_PORT_MAX (a range the OSD binds its messenger ports in; Ceph skips ports in use),
# OWNER_PID (optional: a watchdog stops everything once that process is gone, so a crashed test run
# leaks no daemons), CEPH_STORE (memstore, default; or bluestore on a sparse file under $LAB).
set -euo pipefail
: "${LAB:?LAB must name a state directory}"
export CEPH_CONF="$LAB/ceph/ceph.conf"

stop() {  # by recorded pid only
  for n in watchdog rgw osd mon; do
    f="$LAB/$n.pid"; [ -f "$f" ] || continue; p=$(cat "$f")
    kill "$p" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true; rm -f "$f"
  done
}
if [ "${1:-start}" = stop ]; then stop; exit 0; fi

: "${MON_PORT:?}" "${RGW_PORT:?}"
MS_PORT_MIN=${MS_PORT_MIN:-$((RGW_PORT + 1))}; MS_PORT_MAX=${MS_PORT_MAX:-$((MS_PORT_MIN + 40))}
AK=${S3_ACCESS_KEY:-regmirror-test}; SK=${S3_SECRET_KEY:-regmirror-test-secret}
STORE=${CEPH_STORE:-memstore}

T0=$(date +%s%N); ts() { echo "[$(( ($(date +%s%N)-T0)/1000000 )) ms] $*"; }
wait_for() { # wait_for <tries> <sleep> <cmd...>
  local n=$1 s=$2; shift 2; for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep "$s"; done; return 1; }

trap 'rc=$?; [ $rc = 0 ] || { echo "ceph start-up failed (rc=$rc); stopping what was started; logs in $LAB/ceph/log" >&2; stop; }' EXIT
mkdir -p "$LAB"/ceph/{mon/ceph-a,osd/ceph-0,rgw,run,log}
D="$LAB/ceph"; FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$CEPH_CONF" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
ms bind port min = $MS_PORT_MIN
ms bind port max = $MS_PORT_MAX
auth cluster required = none
auth service required = none
auth client required = none
keyring = $D/keyring
run dir = $D/run
admin socket = $D/run/\$cluster-\$name.asok
log file = $D/log/\$cluster-\$name.log
mon data = $D/mon/\$cluster-\$id
osd data = $D/osd/\$cluster-\$id
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
osd objectstore = $STORE
memstore device bytes = 4294967296
bluestore block create = true
bluestore block size = 8589934592
bluestore cache size = 268435456
[client]
admin socket = $D/run/\$cluster-\$name.\$pid.asok
[client.rgw]
# radosgw defaults ms_mon_client_mode to "secure", impossible with auth=none (EACCES -13 at connect)
ms mon client mode = crc secure
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT tcp_nodelay=1
rgw data = $D/rgw
# Stale multipart uploads are the mirror's to sweep; keep radosgw's own GC quick for deleted objects.
rgw gc obj min wait = 60
CONF
: > "$D/keyring"

# The watchdog first: whatever happens next, the daemons go when the owner does.
if [ -n "${OWNER_PID:-}" ]; then
  setsid bash -c "while kill -0 $OWNER_PID 2>/dev/null; do sleep 2; done; LAB='$LAB' '$0' stop" >/dev/null 2>&1 < /dev/null &
  echo $! > "$LAB/watchdog.pid"
fi

monmaptool --create --clobber --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
ceph-authtool --create-keyring "$D/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-mon --mkfs -i a --monmap "$D/monmap" --keyring "$D/mon.keyring"
setsid ceph-mon -f -i a > "$D/log/mon.out" 2>&1 < /dev/null & echo $! > "$LAB/mon.pid"
wait_for 100 0.2 ceph --connect-timeout 3 mon stat || { echo "ceph-mon failed, see $D/log" >&2; exit 1; }
ts "ceph-mon up on 127.0.0.1:$MON_PORT"
# radosgw's pools, made in the background while the OSD is made (radosgw would create them one by one later)
jobs_=()
for p in .rgw.root default.rgw.log default.rgw.control default.rgw.meta default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
  { ceph osd pool create "$p" 8 8 && ceph osd pool application enable "$p" rgw; } >/dev/null 2>&1 & jobs_+=($!)
done
OSD_UUID=$(cat /proc/sys/kernel/random/uuid); OSD_ID=$(ceph osd new "$OSD_UUID")
ceph-osd -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" > "$D/log/osd-mkfs.out" 2>&1
setsid ceph-osd -f -i "$OSD_ID" > "$D/log/osd.out" 2>&1 < /dev/null & echo $! > "$LAB/osd.pid"
wait_for 150 0.2 sh -c "ceph osd stat -f json | grep -q '\"num_up_osds\":1'" || { echo "ceph-osd failed, see $D/log" >&2; exit 1; }
ts "ceph-osd up ($STORE)"
wait "${jobs_[@]}"   # never a bare wait: it would wait for the daemons
ts "radosgw pools created"
setsid radosgw -f -n client.rgw > "$D/log/rgw.out" 2>&1 < /dev/null & echo $! > "$LAB/rgw.pid"
ok=0; for _ in $(seq 1 300); do   # up to ~60 s; gives up at once if radosgw exits
  curl -s -o /dev/null "http://127.0.0.1:$RGW_PORT/" && { ok=1; break; }; kill -0 "$(cat "$LAB/rgw.pid")" 2>/dev/null || break; sleep 0.2; done
[ $ok = 1 ] || { echo "radosgw failed, see $D/log" >&2; exit 1; }
ts "radosgw answering on 127.0.0.1:$RGW_PORT"
radosgw-admin user create --uid=regmirror-test --display-name=regmirror-test --access-key="$AK" --secret="$SK" > "$D/log/user.json"
ts "S3 user created"
# warm-up (bucket create + PUT + GET + bucket delete) proves S3 works end to end before tests start
S3="curl -fsS --aws-sigv4 aws:amz:us-east-1:s3 -u $AK:$SK -H x-amz-content-sha256:UNSIGNED-PAYLOAD"  # curl 7.88 does not add this header itself
$S3 -X PUT "http://127.0.0.1:$RGW_PORT/warmup" -o /dev/null
echo hello > "$LAB/hello"   # a file, not stdin: radosgw answers 411 to chunked uploads without length
$S3 -T "$LAB/hello" "http://127.0.0.1:$RGW_PORT/warmup/hello" -o /dev/null
[ "$($S3 "http://127.0.0.1:$RGW_PORT/warmup/hello")" = hello ] || { echo "S3 warm-up GET failed" >&2; exit 1; }
ts "S3 PUT/GET ok"
cat > "$LAB/env.tmp" <<ENV
S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
S3_REGION=us-east-1
S3_ACCESS_KEY=$AK
S3_SECRET_KEY=$SK
S3_FORCE_PATH_STYLE=true
ENV
mv "$LAB/env.tmp" "$LAB/env"
cat "$LAB/env"

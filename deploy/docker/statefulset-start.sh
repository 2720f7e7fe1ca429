#!/bin/sh
# Starts one member of a Kubernetes StatefulSet (deploy/k8s, deploy/helm): works out this pod's
# node id from its ordinal (pod NAME-0 is node 1), puts its own certificate in place and names
# every member by its stable DNS name, which the node resolves again at every connect (a pod's IP
# changes at each restart, its name does not). Arguments after it go to `bulwark start`.
#
# Environment:
#   POD_NAME, POD_NAMESPACE the pod's name and namespace (the downward API) [name: /etc/hostname]
#   BULWARK_PEER_SERVICE    the headless Service that gives each pod its DNS name
#   BULWARK_INITIAL_MEMBERS the voters the cluster starts with (3 or 5) [3]; a pod with a higher
#                           ordinal starts with --join and waits for `bulwark cluster add`
#   BULWARK_CLUSTER_DOMAIN  [cluster.local]
#   BULWARK_PEER_PORT, BULWARK_HTTP_PORT [7170, 7070]
#   BULWARK_CERTS_DIR       the mounted Secret: ca.crt, api.crt, api.key, node-ID.crt, node-ID.key
#                           [/etc/bulwark/certs]
#   BULWARK_TLS_DIR         where this node's certificates are copied (an emptyDir) [/run/bulwark/tls]
set -eu

ns="${POD_NAMESPACE:?set POD_NAMESPACE from the downward API (metadata.namespace)}"
service="${BULWARK_PEER_SERVICE:?set BULWARK_PEER_SERVICE to the headless Service name}"
initial="${BULWARK_INITIAL_MEMBERS:-3}"
domain="${BULWARK_CLUSTER_DOMAIN:-cluster.local}"
peer_port="${BULWARK_PEER_PORT:-7170}"
http_port="${BULWARK_HTTP_PORT:-7070}"
certs="${BULWARK_CERTS_DIR:-/etc/bulwark/certs}"
tls="${BULWARK_TLS_DIR:-/run/bulwark/tls}"

pod="${POD_NAME:-$(cat /etc/hostname)}"
set_name="${pod%-*}"
ordinal="${pod##*-}"
case "$ordinal" in
  '' | *[!0-9]*)
    echo "bulwark-statefulset-start: pod name $pod does not end in -ORDINAL" >&2
    exit 2
    ;;
esac
id=$((ordinal + 1))
host() { echo "$set_name-$1.$service.$ns.svc.$domain"; }

for f in ca.crt api.crt api.key "node-$id.crt" "node-$id.key"; do
  if [ ! -r "$certs/$f" ]; then
    echo "bulwark-statefulset-start: $certs/$f is missing: the certificates Secret needs it (docs/deploy.md)" >&2
    exit 2
  fi
done
umask 077
mkdir -p "$tls"
cp "$certs/ca.crt" "$certs/api.crt" "$certs/api.key" "$tls/"
cp "$certs/node-$id.crt" "$tls/node.crt"
cp "$certs/node-$id.key" "$tls/node.key"

set -- start --node-id "$id" --tls-dir "$tls" \
  --peer-listen "0.0.0.0:$peer_port" --http-listen "0.0.0.0:$http_port" "$@"
i=0
while [ "$i" -lt "$initial" ]; do
  set -- "$@" --member "$((i + 1))=$(host "$i"):$peer_port=$(host "$i"):$http_port"
  i=$((i + 1))
done
if [ "$ordinal" -ge "$initial" ]; then
  set -- "$@" --join --member "$id=$(host "$ordinal"):$peer_port=$(host "$ordinal"):$http_port"
fi
echo "bulwark-statefulset-start: node $id of $set_name: bulwark $*" >&2
# BULWARK_BIN: another binary (the tests give one that records its arguments).
exec "${BULWARK_BIN:-/usr/local/bin/bulwark}" "$@"

#!/bin/sh
# Makes a new cluster's certificates and first admin token, and the two Kubernetes Secrets that
# carry them (deploy/k8s/secrets.example.yaml shows their shape), as one YAML file to apply:
#
#   deploy/k8s/make-secrets.sh OUT_DIR NAMESPACE [NAME [MEMBERS [CLUSTER_ID]]]
#   kubectl -n NAMESPACE apply -f OUT_DIR/secrets.yaml
#
# NAME is the StatefulSet's (the Helm release's) name [bulwark], MEMBERS how many members to
# issue certificates for [3]. OUT_DIR/ca holds the CA's key: keep it safe and out of the cluster
# (it issues the certificates of members added later); OUT_DIR/admin.token is the admin token.
# Needs `bulwark` on PATH (or BULWARK=/path/to/bulwark; the image has it) and base64.
set -eu

out="${1:?usage: make-secrets.sh OUT_DIR NAMESPACE [NAME [MEMBERS [CLUSTER_ID]]]}"
ns="${2:?usage: make-secrets.sh OUT_DIR NAMESPACE [NAME [MEMBERS [CLUSTER_ID]]]}"
name="${3:-bulwark}"
members="${4:-3}"
cluster_id="${5:-1}"
domain="${BULWARK_CLUSTER_DOMAIN:-cluster.local}"
bulwark="${BULWARK:-bulwark}"

if [ -e "$out/ca/ca.key" ]; then
  echo "make-secrets.sh: $out/ca already holds a CA; not replacing it" >&2
  exit 2
fi
umask 077
mkdir -p "$out"
"$bulwark" cert init --dir "$out/ca" --cluster-id "$cluster_id"

# The client API's certificate names every way clients reach a member: the client Service, and
# each pod by its own name.
set -- --api-san "$name" --api-san "$name.$ns" --api-san "$name.$ns.svc" \
  --api-san "$name.$ns.svc.$domain" --api-san localhost --api-san 127.0.0.1
i=0
while [ "$i" -lt "$members" ]; do
  set -- "$@" --api-san "$name-$i.$name-peers.$ns.svc.$domain"
  i=$((i + 1))
done
"$bulwark" cert issue --ca "$out/ca" --out "$out/api" "$@"

id=1
while [ "$id" -le "$members" ]; do
  "$bulwark" cert issue --ca "$out/ca" --node-id "$id" --out "$out/node-$id"
  id=$((id + 1))
done
"$bulwark" token generate --out "$out/admin.token"

b64() { base64 < "$1" | tr -d '\n'; }
{
  echo "# Made by deploy/k8s/make-secrets.sh for $name in namespace $ns: real keys, keep it private."
  echo "apiVersion: v1"
  echo "kind: Secret"
  echo "metadata:"
  echo "  name: $name-certs"
  echo "  labels:"
  echo "    app.kubernetes.io/name: bulwark"
  echo "type: Opaque"
  echo "data:"
  echo "  ca.crt: $(b64 "$out/ca/ca.crt")"
  echo "  api.crt: $(b64 "$out/api/api.crt")"
  echo "  api.key: $(b64 "$out/api/api.key")"
  id=1
  while [ "$id" -le "$members" ]; do
    echo "  node-$id.crt: $(b64 "$out/node-$id/node.crt")"
    echo "  node-$id.key: $(b64 "$out/node-$id/node.key")"
    id=$((id + 1))
  done
  echo "---"
  echo "apiVersion: v1"
  echo "kind: Secret"
  echo "metadata:"
  echo "  name: $name-admin-token"
  echo "  labels:"
  echo "    app.kubernetes.io/name: bulwark"
  echo "type: Opaque"
  echo "data:"
  echo "  admin.token: $(b64 "$out/admin.token")"
} > "$out/secrets.yaml"
echo "wrote $out/secrets.yaml (Secrets $name-certs and $name-admin-token); apply it with: kubectl -n $ns apply -f $out/secrets.yaml"

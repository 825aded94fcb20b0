#!/bin/sh
# cluster_smoke.sh - `make cluster` itself, non-interactively: private MariaDB,
# Redis, two qchatd nodes and nginx, a scripted qchat exchange through nginx
# between users on different nodes, then everything stopped by PID.
cd "$(dirname "$0")/../.." || exit 1
CLUSTER_SMOKE=1 exec sh tests/harness/cluster.sh

# The demo's settings, sourced by scripts/demo.sh. Each can be overridden from the
# environment; the tests run a private copy of the demo next to any other this way.
: "${STOCKADE_DEMO_INSTANCE:=demo}"          # label stockade.demo=VALUE on every container
: "${STOCKADE_DEMO_PREFIX:=}"                # compose projects: ${PREFIX}blog, ${PREFIX}pinger, ${PREFIX}attacker
: "${STOCKADE_DEMO_STATE:=/var/lib/stockade/demo}"  # database, logs, pid files, forensics bundles
: "${STOCKADE_SOCKET:=/run/stockade/enforcer.sock}" # the default, so `stockade` finds the demo's enforcer
: "${STOCKADE_DEMO_BLOG_PORT:=8080}"         # http://127.0.0.1:8080/ the blog
: "${STOCKADE_DEMO_PINGER_PORT:=8081}"       # http://127.0.0.1:8081/ the weak app
: "${STOCKADE_DEMO_FEED_PORT:=8787}"         # http://127.0.0.1:8787/ the demo's threat feeds
: "${STOCKADE_DEMO_NET:=10.199.77}"          # the shared internal network, ${NET}.0/24
: "${STOCKADE_DEMO_SHARED_NET:=stockade-demo-shared}"
: "${STOCKADE_DEMO_LEARN_SECONDS:=60}"       # learning period of every profile
: "${STOCKADE_NFT_TABLE:=stockade_demo}"     # the demo enforcer's nftables table (removed by down)
export STOCKADE_DEMO_INSTANCE STOCKADE_DEMO_PREFIX STOCKADE_DEMO_STATE STOCKADE_SOCKET \
    STOCKADE_DEMO_BLOG_PORT STOCKADE_DEMO_PINGER_PORT STOCKADE_DEMO_FEED_PORT \
    STOCKADE_DEMO_NET STOCKADE_DEMO_SHARED_NET STOCKADE_DEMO_LEARN_SECONDS STOCKADE_NFT_TABLE
# Fixed addresses on the shared network (the compose files use the same ones):
STOCKADE_DEMO_DB_IP="$STOCKADE_DEMO_NET.20"
STOCKADE_DEMO_PINGER_IP="$STOCKADE_DEMO_NET.30"
STOCKADE_DEMO_ATTACKER_IP="$STOCKADE_DEMO_NET.66"
export STOCKADE_DEMO_DB_IP STOCKADE_DEMO_PINGER_IP STOCKADE_DEMO_ATTACKER_IP

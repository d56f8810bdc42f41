#!/usr/bin/env bash
# Installs the suite on a node, as Calico's install-cni does: the plugin binaries into the
# CNI bin dir, a kubeconfig for the plugins, and the rendered conflist into the CNI conf dir.
# Every file is written beside its target and renamed over it, so a kubelet never execs or
# reads a half-written file. What it wrote is listed in a state file in the conf dir, so that
# a rerun changes nothing and --uninstall removes exactly that. Run with --help for the options.
set -Eeuo pipefail
export LC_ALL=C

prog=install.sh
root=$(cd "$(dirname "$0")/.." && pwd -P)
plugins=(calico calico-ipam host-local portmap bandwidth loopback)
state_name=.calico-rs-install
# Where a file this script replaced is kept (a hard link, beside the target), so that
# --uninstall can put it back. A subdirectory, because runtimes load every *.conflist at the
# top of the conf dir, hidden or not.
backup_name=.calico-rs-install.backup
sa_default=/var/run/secrets/kubernetes.io/serviceaccount
# The first line of a kubeconfig `calico-ipam kubeconfig refresh` rewrote: one this script
# wrote, with a newer token, is still this script's to update and to uninstall.
refreshed_header='# Kubeconfig of the Calico CNI plugins, kept fresh by calico-ipam kubeconfig refresh.'

# The heredoc expands variables, so a backtick in it would run a command: each is escaped.
usage() {
    cat <<EOF
Usage: scripts/install.sh [OPTION]...
Install the CNI plugin suite on this node as Calico's install-cni does: copy the binaries
(${plugins[*]}) into the CNI bin dir, write a kubeconfig for them, and render a conflist
from conflists/ into the CNI conf dir.

Binaries
  --from DIR            where the built binaries are (default: target/release of this
                        repository, or \$CARGO_TARGET_DIR/release)
  --build               first run scripts/build.sh, the release build (not with --from)
  --bin-dir DIR         CNI bin dir to install into (default: /opt/cni/bin)

Conflist
  --conflist NAME       template: a file of conflists/ (default: 10-calico.conflist; the
                        .conflist suffix may be left out), or a path containing a /
  --conf-dir DIR        CNI conf dir (default: /etc/cni/net.d); the state file lives here
  --conf-name NAME      file name of the rendered conflist (default: 10-calico.conflist)
  --node-name NAME      __KUBERNETES_NODE_NAME__ (default: \$KUBERNETES_NODE_NAME, else this
                        host's name, lower-cased)
  --mtu N               __CNI_MTU__: 0 (auto: the plugin takes the MTU calico-node
                        writes to /var/lib/calico/mtu) or 68 to 65535 (default:
                        \$CNI_MTU, else 0)
  --etcd-endpoints URLS __ETCD_ENDPOINTS__, comma-separated http(s) URLs (default:
                        \$ETCD_ENDPOINTS; required by a conflist that uses it)
  --etcd-cert-file FILE __ETCD_CERT_FILE__: PEM client certificate for etcd (with
                        --etcd-key-file; default: \$ETCD_CERT_FILE, else none: "")
  --etcd-key-file FILE  __ETCD_KEY_FILE__: its PEM key (default: \$ETCD_KEY_FILE)
  --etcd-ca-cert-file FILE
                        __ETCD_CA_CERT_FILE__: PEM CA of etcd's certificates (default:
                        \$ETCD_CA_CERT_FILE, else none: "")
  --kubeconfig PATH     __KUBECONFIG_FILEPATH__: where the kubeconfig is written
                        (default: <conf-dir>/calico-kubeconfig)

Kubeconfig (mode 0600: the CA as certificate-authority-data, the token as token, or a
client certificate and key as client-certificate-data and client-key-data)
  --token-file FILE     service-account token (default: <service-account-dir>/token)
  --client-cert FILE    PEM client certificate, instead of a token (with --client-key),
                        as an etcd or calicoctl-style install authenticates
  --client-key FILE     PEM private key of --client-cert
  --ca-file FILE        PEM CA of the API server (default: <service-account-dir>/ca.crt)
  --server URL          https://host:port of the API server (default, in a pod:
                        https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT)
  --service-account-dir DIR
                        where a pod's service-account files are (default:
                        $sa_default)
  Written when any of these options is given (a missing one taken from the in-cluster
  defaults), or, with none of them, when running in a pod (\$KUBERNETES_SERVICE_HOST set
  and a token present). A conflist that names a kubeconfig is refused when none is
  written and none exists at that path. A kubeconfig since rewritten by
  \`calico-ipam kubeconfig refresh\` still counts as written by this script.

Datastore
  --check-datastore     before writing the conflist, run the installed \`calico -t\` on its
                        calico plugin: the datastore it names must answer and say it is
                        ready (ClusterInformation datastoreReady), else exit 2 with the
                        cause and no conflist written

Beside calico-node (drop-in)
  --binaries-only       install the binaries alone: the conflist and kubeconfig calico-node's
                        install-cni wrote (and calico-node keeps fresh) stay as they are;
                        Calico's binaries it replaces are kept and put back by --uninstall.
                        Only --from, --build, --bin-dir and --conf-dir apply (the state
                        file lives in the conf dir). Keep install-cni from copying over
                        them: see README.md, "Installing on a node"

Ownership
  --force               replace a conflist or kubeconfig this script did not write (the
                        replaced file is kept and put back by --uninstall)
  --uninstall           remove what this script installed (listed in <conf-dir>/$state_name)
                        and put back the files it had replaced; only --conf-dir applies
  -h, --help            show this help

A binary or file whose content is already what would be written is left alone (no mtime
changes). Replaced binaries are kept in <bin-dir>/$backup_name and put back by --uninstall.
No token or key is ever printed.

Exit status: 0 done (or nothing to do), 1 usage error or refusal (nothing written),
2 failure while working.
EOF
}

say() { printf '%s\n' "$*"; }
refuse() {
    printf '%s: %s\n' "$prog" "$*" >&2
    exit 1
}
usage_error() {
    printf '%s: %s\nsee scripts/install.sh --help\n' "$prog" "$*" >&2
    exit 1
}
# Any command that fails unexpectedly is a failure (2), not a refusal (1). Only the main
# shell reports it: a failing command substitution makes its caller fail too.
on_error() {
    local status=$1 line=$2
    if [ "$BASHPID" = "$$" ]; then
        printf '%s: failed (status %s) at line %s; see the message above\n' "$prog" "$status" "$line" >&2
    fi
    exit 2
}
trap 'on_error $? $LINENO' ERR

temps=()
remove_temps() {
    local t
    for t in "${temps[@]}"; do rm -f -- "$t"; done
}
trap remove_temps EXIT

# ---------------------------------------------------------------------------------------
# Options

from="" build=0 bin_dir=/opt/cni/bin conf_dir=/etc/cni/net.d
conflist=10-calico.conflist conf_name=10-calico.conflist
# MTU 0 means auto, as in Calico's install-cni: the plugin reads the MTU calico-node wrote.
node_name=${KUBERNETES_NODE_NAME:-} mtu=${CNI_MTU:-0} etcd_endpoints=${ETCD_ENDPOINTS:-}
kubeconfig="" token_file="" ca_file="" server="" sa_dir="" client_cert="" client_key=""
# etcd's TLS files, as install-cni renders them: the path, or "" for none.
etcd_cert_file=${ETCD_CERT_FILE:-} etcd_key_file=${ETCD_KEY_FILE:-}
etcd_ca_cert_file=${ETCD_CA_CERT_FILE:-}
force=0 uninstall=0 check_datastore=0 binaries_only=0
# The options given that are about the conflist or kubeconfig (refused with --binaries-only).
conflist_options=()

while [ $# -gt 0 ]; do
    opt=$1 val="" inline=0
    case $opt in
        --*=*) val=${opt#*=} opt=${opt%%=*} inline=1 ;;
    esac
    case $opt in
        --from | --bin-dir | --conflist | --conf-dir | --conf-name | --node-name | --mtu | \
            --etcd-endpoints | --kubeconfig | --token-file | --ca-file | --server | \
            --service-account-dir | --client-cert | --client-key | --etcd-cert-file | \
            --etcd-key-file | --etcd-ca-cert-file)
            if [ "$inline" = 0 ]; then
                [ $# -ge 2 ] || usage_error "$opt needs a value"
                val=$2
                shift
            fi
            ;;
        --build | --force | --uninstall | --check-datastore | --binaries-only | -h | --help)
            [ "$inline" = 0 ] || usage_error "$opt takes no value"
            ;;
        *) usage_error "unknown argument: $opt" ;;
    esac
    case $opt in
        --from | --bin-dir | --conf-dir | --build | --uninstall | --binaries-only | -h | --help) ;;
        *) conflist_options+=("$opt") ;;
    esac
    case $opt in
        --from) from=$val ;;
        --bin-dir) bin_dir=$val ;;
        --conflist) conflist=$val ;;
        --conf-dir) conf_dir=$val ;;
        --conf-name) conf_name=$val ;;
        --node-name) node_name=$val ;;
        --mtu) mtu=$val ;;
        --etcd-endpoints) etcd_endpoints=$val ;;
        --kubeconfig) kubeconfig=$val ;;
        --token-file) token_file=$val ;;
        --ca-file) ca_file=$val ;;
        --server) server=$val ;;
        --service-account-dir) sa_dir=$val ;;
        --client-cert) client_cert=$val ;;
        --client-key) client_key=$val ;;
        --etcd-cert-file) etcd_cert_file=$val ;;
        --etcd-key-file) etcd_key_file=$val ;;
        --etcd-ca-cert-file) etcd_ca_cert_file=$val ;;
        --build) build=1 ;;
        --check-datastore) check_datastore=1 ;;
        --binaries-only) binaries_only=1 ;;
        --force) force=1 ;;
        --uninstall) uninstall=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
    esac
    shift
done

# The state file holds one path per line: a path with a line break cannot be recorded.
abs_path() {
    local what=$1 path=$2
    [ -n "$path" ] || usage_error "$what is empty"
    [[ $path != *[[:cntrl:]]* ]] || usage_error "$what contains a control character"
    realpath -m -- "$path"
}
# A refusal inside $(...) exits only the subshell: pass its status on (1 stays 1).
conf_dir=$(abs_path --conf-dir "$conf_dir") || exit $?
state_file=$conf_dir/$state_name

# ---------------------------------------------------------------------------------------
# The state file: "<sha256> <kind> <absolute path>" per file written, sorted by path.

declare -A state_sha=() state_kind=()

read_state() {
    [ -f "$state_file" ] || return 0
    local line n=0 sha rest kind path
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        case $line in '' | '#'*) continue ;; esac
        sha=${line%% *} rest=${line#* }
        kind=${rest%% *} path=${rest#* }
        if [[ ! $sha =~ ^[0-9a-f]{64}$ ]] || [[ ! $kind =~ ^(bin|conflist|kubeconfig)$ ]] ||
            [[ $path != /* ]] || [ "$rest" = "$line" ] || [ "$path" = "$rest" ]; then
            refuse "$state_file is damaged at line $n; fix or remove it (it lists the files a previous install wrote)"
        fi
        state_sha[$path]=$sha
        state_kind[$path]=$kind
    done <"$state_file"
}

render_state() {
    local path
    printf '# Files written by scripts/install.sh and their SHA-256; --uninstall removes exactly these.\n'
    while IFS= read -r path; do
        [ -n "$path" ] || continue
        printf '%s %s %s\n' "${state_sha[$path]}" "${state_kind[$path]}" "$path"
    done < <(printf '%s\n' "${!state_sha[@]}" | sort)
}

sha_file() {
    local out
    out=$(sha256sum <"$1")
    printf '%s' "${out%% *}"
}
sha_text() {
    local out
    out=$(printf '%s' "$1" | sha256sum)
    printf '%s' "${out%% *}"
}

# Writes stdin to <dir>/.<name>.calico-rs-install.XXXXXX with MODE, fsyncs it and renames
# it over TARGET, then fsyncs the directory. The temporary name ends in random letters, so
# a runtime never loads it as a conflist while it is being written.
atomic_write() {
    local target=$1 mode=$2 dir base tmp
    dir=$(dirname -- "$target") base=$(basename -- "$target")
    tmp=$(mktemp -- "$dir/.$base.calico-rs-install.XXXXXX")
    temps+=("$tmp")
    cat >"$tmp"
    chmod "$mode" -- "$tmp"
    sync -- "$tmp"
    mv -fT -- "$tmp" "$target"
    sync -- "$dir"
}

save_state() {
    local content
    content=$(render_state)$'\n'
    if [ -f "$state_file" ] && [ "$(sha_file "$state_file")" = "$(sha_text "$content")" ]; then
        return 0
    fi
    printf '%s' "$content" | atomic_write "$state_file" 0644
}

# Whether PATH is a kubeconfig this script wrote that the refresher has rewritten since.
refreshed() {
    local path=$1 first=""
    if [ "${state_kind[$path]:-}" != kubeconfig ] || [ ! -f "$path" ]; then return 1; fi
    IFS= read -r first <"$path" || true
    [ "$first" = "$refreshed_header" ]
}

backup_of() { printf '%s/%s/%s' "$(dirname -- "$1")" "$backup_name" "$(basename -- "$1")"; }

# What TARGET is, given the SHA-256 of what would be written there:
# absent | same (already that content) | ours (written by us, unchanged since) | foreign.
status_of() {
    local target=$1 new_sha=$2 cur
    if [ ! -e "$target" ] && [ ! -L "$target" ]; then
        echo absent
        return
    fi
    [ -f "$target" ] || refuse "$target exists and is not a file; move it out of the way"
    cur=$(sha_file "$target")
    if [ "$cur" = "$new_sha" ]; then
        echo same
    elif [ "${state_sha[$target]:-}" = "$cur" ]; then
        echo ours
    else
        echo foreign
    fi
}

# Keeps the file an install replaces (a hard link: same inode, mtime and mode), so that
# --uninstall can put it back. A file kept earlier gives way: the one replaced now was
# written over ours since (calico-node's install-cni copying Calico's binaries again, say),
# so it is newer, and what its writer wants there once we are gone.
keep_replaced() {
    local target=$1 backup tmp
    backup=$(backup_of "$target")
    mkdir -p -- "$(dirname -- "$backup")"
    if [ -e "$backup" ] || [ -L "$backup" ]; then
        tmp=$(mktemp -u -- "$backup.XXXXXX")
        temps+=("$tmp")
        ln -P -- "$target" "$tmp"
        mv -fT -- "$tmp" "$backup"
        say "  (the file it replaces is kept as $backup, in place of the one kept before)"
        return 0
    fi
    ln -P -- "$target" "$backup"
    say "  (the file it replaces is kept as $backup)"
}

# announce TARGET MODE STATUS: says what happens to TARGET; true when it is to be written.
announce() {
    local target=$1 mode=$2 status=$3
    case $status in
        same)
            # Identical content: leave the file (and its mtime) alone; fix only its mode.
            if [ "$(stat -c %a -- "$target")" != "${mode#0}" ]; then chmod "$mode" -- "$target"; fi
            say "unchanged $target"
            return 1
            ;;
        foreign)
            say "replacing $target"
            keep_replaced "$target"
            ;;
        ours) say "updating $target" ;;
        absent) say "installing $target" ;;
    esac
}

# Recorded after the rename: the state never claims a file that is not there.
record() {
    state_kind[$2]=$1
    state_sha[$2]=$3
    save_state
}

# Two installers at once would interleave their state files: one at a time per conf dir.
locked=0
lock_conf_dir() {
    exec {lock_fd}<"$conf_dir"
    flock "$lock_fd"
    locked=1
}

# Builds if asked, then checks every binary is there to copy and nothing but a file is in
# the way of one: before anything is written, so that a refusal writes nothing.
prepare_binaries() {
    local plugin
    if [ "$build" = 1 ]; then
        say "building: scripts/build.sh"
        "$root/scripts/build.sh" >&2
    fi
    for plugin in "${plugins[@]}"; do
        if [ ! -f "$from/$plugin" ] || [ ! -x "$from/$plugin" ]; then
            refuse "no executable $from/$plugin: build with scripts/build.sh (or pass --build), or point --from at the binaries"
        fi
    done
    for plugin in "${plugins[@]}"; do
        if [ -e "$bin_dir/$plugin" ] && [ ! -f "$bin_dir/$plugin" ]; then
            refuse "$bin_dir/$plugin exists and is not a file; move it out of the way"
        fi
    done
}

# Copies the binaries in; a binary that is not ours (Calico's, the reference plugins') is
# kept for --uninstall. Needs the conf dir locked (the state file is written).
write_binaries() {
    local plugin target sha status
    for plugin in "${plugins[@]}"; do
        target=$bin_dir/$plugin
        sha=$(sha_file "$from/$plugin")
        status=$(status_of "$target" "$sha") || exit $?
        if announce "$target" 0755 "$status"; then
            atomic_write "$target" 0755 <"$from/$plugin"
            record bin "$target" "$sha"
        fi
    done
}

# ---------------------------------------------------------------------------------------
# Uninstall

do_uninstall() {
    if [ ! -f "$state_file" ]; then
        say "nothing to uninstall: no $state_name in $conf_dir"
        exit 0
    fi
    exec {lock_fd}<"$conf_dir"
    flock "$lock_fd"
    read_state
    local path sha backup dir
    local -A dirs=()
    for path in "${!state_sha[@]}"; do
        sha=${state_sha[$path]} backup=$(backup_of "$path") dir=$(dirname -- "$path")
        if { [ -e "$path" ] || [ -L "$path" ]; } && ! { [ -f "$path" ] && [ "$(sha_file "$path")" = "$sha" ]; } &&
            ! refreshed "$path"; then
            say "left $path: changed since it was installed"
            if [ -e "$backup" ]; then say "  (the file it had replaced is still in $backup)"; fi
            continue
        fi
        if [ -e "$backup" ] || [ -L "$backup" ]; then
            mv -fT -- "$backup" "$path"
            say "restored $path (the file it had replaced)"
        elif [ -e "$path" ]; then
            rm -f -- "$path"
            say "removed $path"
        else
            say "already gone: $path"
        fi
        dirs[$dir]=1
    done
    for dir in "${!dirs[@]}"; do
        if [ -d "$dir/$backup_name" ]; then rmdir -- "$dir/$backup_name" 2>/dev/null || true; fi
        sync -- "$dir"
    done
    rm -f -- "$state_file"
    sync -- "$conf_dir"
    say "removed $state_file"
}

if [ "$uninstall" = 1 ]; then
    do_uninstall
    exit 0
fi

# ---------------------------------------------------------------------------------------
# Install: every check first, so that a refusal writes nothing.

command -v python3 >/dev/null 2>&1 || {
    printf '%s: python3 is needed to check that the rendered conflist is JSON (apt-get install python3)\n' "$prog" >&2
    exit 2
}

bin_dir=$(abs_path --bin-dir "$bin_dir") || exit $?
if [ -z "$conf_name" ] || [[ $conf_name == */* ]] || [[ $conf_name != *.conflist ]]; then
    usage_error "--conf-name must be a file name ending in .conflist (runtimes read a .conf as a single network): $conf_name"
fi
conf_target=$(abs_path --conf-name "$conf_dir/$conf_name") || exit $?
kubeconfig=$(abs_path --kubeconfig "${kubeconfig:-$conf_dir/calico-kubeconfig}") || exit $?

if [ "$build" = 1 ] && [ -n "$from" ]; then
    usage_error "--build builds into target/release; it cannot be combined with --from"
fi
from=$(abs_path --from "${from:-${CARGO_TARGET_DIR:-$root/target}/release}") || exit $?

# Beside calico-node: its install-cni wrote the conflist and the kubeconfig, calico-node
# keeps the kubeconfig's token fresh, and both stay exactly as they are.
if [ "$binaries_only" = 1 ]; then
    if [ ${#conflist_options[@]} -gt 0 ]; then
        usage_error "--binaries-only writes the binaries alone: ${conflist_options[0]} does not go with it (only --from, --build, --bin-dir and --conf-dir do)"
    fi
    if [ -d "$conf_dir" ]; then lock_conf_dir; fi
    read_state
    prepare_binaries
    mkdir -p -- "$bin_dir" "$conf_dir"
    if [ "$locked" = 0 ]; then lock_conf_dir; fi
    write_binaries
    say "  (conflist and kubeconfig in $conf_dir left as they are)"
    exit 0
fi

if [[ $conflist == */* ]]; then
    template=$conflist
else
    template=$root/conflists/${conflist%.conflist}.conflist
fi
[ -f "$template" ] || usage_error "no conflist template $template (see $root/conflists/)"

# JSON string contents: the values go between the template's quotes.
json_escape() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    printf '%s' "$s"
}

if [ -z "$node_name" ]; then
    node_name=$(uname -n)
    node_name=${node_name,,}
fi
[[ $node_name != *[[:cntrl:]]* ]] || usage_error "the node name contains a control character"
# No leading zeros: the value goes into the conflist as a JSON number.
if ! [[ $mtu =~ ^(0|[1-9][0-9]{1,4})$ ]] || { [ "$mtu" != 0 ] && { [ "$mtu" -lt 68 ] || [ "$mtu" -gt 65535 ]; }; }; then
    usage_error "the MTU must be 0 (auto: calico-node's /var/lib/calico/mtu) or a number from 68 to 65535 (--mtu or \$CNI_MTU): $mtu"
fi
# No blanks, quotes or backslashes: the values go into JSON and YAML strings as they are.
url_re='^https?://[^[:space:][:cntrl:]"\]+$'
if [ -n "$etcd_endpoints" ]; then
    IFS=, read -ra endpoints <<<"$etcd_endpoints"
    for endpoint in "${endpoints[@]}"; do
        [[ $endpoint =~ $url_re ]] ||
            usage_error "an etcd endpoint is an http:// or https:// URL, not '$endpoint' (--etcd-endpoints, comma-separated)"
    done
fi

# Kubeconfig credentials: explicit options, with the in-cluster defaults for what they omit.
in_cluster_server() {
    local host=${KUBERNETES_SERVICE_HOST:-} port=${KUBERNETES_SERVICE_PORT:-443}
    [ -n "$host" ] || return 0
    if [[ $host == *:* ]] && [[ $host != \[* ]]; then host="[$host]"; fi
    printf 'https://%s:%s' "$host" "$port"
}
write_kubeconfig=0
if [ -n "$client_cert$client_key" ]; then
    if [ -z "$client_cert" ] || [ -z "$client_key" ]; then
        usage_error "--client-cert and --client-key go together"
    fi
    [ -z "$token_file" ] || usage_error "--token-file or --client-cert, not both"
fi
if [ -n "$token_file$ca_file$server$sa_dir$client_cert" ]; then
    sa_dir=${sa_dir:-$sa_default}
    ca_file=${ca_file:-$sa_dir/ca.crt}
    if [ -z "$client_cert" ]; then token_file=${token_file:-$sa_dir/token}; fi
    server=${server:-$(in_cluster_server)}
    [ -n "$server" ] ||
        refuse "a kubeconfig needs the API server: pass --server https://host:port (or set \$KUBERNETES_SERVICE_HOST)"
    write_kubeconfig=1
elif [ -n "${KUBERNETES_SERVICE_HOST:-}" ] && [ -f "$sa_default/token" ]; then
    sa_dir=$sa_default token_file=$sa_dir/token ca_file=$sa_dir/ca.crt server=$(in_cluster_server)
    write_kubeconfig=1
fi

kubeconfig_text=""
if [ "$write_kubeconfig" = 1 ]; then
    server_re='^https://[^/[:space:][:cntrl:]"\]+/?$'
    [[ $server =~ $server_re ]] ||
        usage_error "--server must be https://host:port (credentials are only sent over TLS): $server"
    server=${server%/}
    readable() { [ -f "$1" ] && [ -r "$1" ]; }
    readable "$ca_file" || refuse "no readable CA certificate at $ca_file (--ca-file)"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$ca_file" ||
        refuse "$ca_file is not a PEM certificate (no BEGIN CERTIFICATE line)"
    ca_data=$(base64 -w0 <"$ca_file")
    if [ -n "$client_cert" ]; then
        readable "$client_cert" || refuse "no readable client certificate at $client_cert (--client-cert)"
        readable "$client_key" || refuse "no readable client key at $client_key (--client-key)"
        grep -q -- '-----BEGIN CERTIFICATE-----' "$client_cert" ||
            refuse "$client_cert is not a PEM certificate (no BEGIN CERTIFICATE line)"
        grep -Eq -- '^-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' "$client_key" ||
            refuse "$client_key is not a PEM private key (no BEGIN ... PRIVATE KEY line)"
        # Embedded, as the CA is: the kubeconfig is one self-contained 0600 file whose hash
        # covers the credentials, so a renewed certificate is picked up by a rerun and
        # --uninstall takes the key away with it.
        cert_data=$(base64 -w0 <"$client_cert")
        key_data=$(base64 -w0 <"$client_key")
        user_lines="    client-certificate-data: \"$cert_data\"
    client-key-data: \"$key_data\""
        unset key_data
        credentials="client certificate from $client_cert"
    else
        readable "$token_file" || refuse "no readable service-account token at $token_file (--token-file)"
        # Read by the shell itself: the token never appears on a command line or in a message.
        token=$(<"$token_file")
        [[ $token =~ ^[A-Za-z0-9._~+/=-]+$ ]] ||
            refuse "$token_file does not hold a bearer token (one line of base64url and dots)"
        user_lines="    token: \"$token\""
        unset token
        credentials="token from $token_file"
    fi
    kubeconfig_text="# Kubeconfig of the Calico CNI plugins, written by scripts/install.sh.
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: \"$server\"
    certificate-authority-data: \"$ca_data\"
users:
- name: calico
  user:
$user_lines
contexts:
- name: calico-context
  context:
    cluster: local
    user: calico
current-context: calico-context
"
    unset user_lines
fi

# The path an etcd TLS placeholder renders to ("" for none), absolute, of a readable file;
# a certificate needs its key and a key its certificate.
etcd_tls_file() {
    local path
    case $1 in
        __ETCD_CERT_FILE__) path=$etcd_cert_file ;;
        __ETCD_KEY_FILE__) path=$etcd_key_file ;;
        *) path=$etcd_ca_cert_file ;;
    esac
    if { [ -n "$etcd_cert_file" ] && [ -z "$etcd_key_file" ]; } ||
        { [ -z "$etcd_cert_file" ] && [ -n "$etcd_key_file" ]; }; then
        usage_error "--etcd-cert-file and --etcd-key-file go together (etcd's client certificate and its key)"
    fi
    [ -n "$path" ] || return 0
    if [ ! -f "$path" ] || [ ! -r "$path" ]; then
        refuse "$template uses $1 and $path is not a readable file"
    fi
    abs_path "$1" "$path"
}

# Render the conflist: every placeholder it uses needs a value.
template_text=$(cat -- "$template")
conflist_text=$template_text$'\n'
mapfile -t placeholders < <(grep -o '__[A-Z0-9_]*__' -- "$template" | sort -u)
for placeholder in "${placeholders[@]}"; do
    case $placeholder in
        __KUBERNETES_NODE_NAME__) value=$(json_escape "$node_name") ;;
        __CNI_MTU__) value=$mtu ;;
        __ETCD_ENDPOINTS__)
            [ -n "$etcd_endpoints" ] ||
                refuse "$template uses __ETCD_ENDPOINTS__ and no etcd endpoints were given: pass --etcd-endpoints https://host:2379[,...] or set \$ETCD_ENDPOINTS"
            value=$(json_escape "$etcd_endpoints")
            ;;
        __ETCD_CERT_FILE__ | __ETCD_KEY_FILE__ | __ETCD_CA_CERT_FILE__)
            value=$(etcd_tls_file "$placeholder") || exit $?
            value=$(json_escape "$value")
            ;;
        __KUBECONFIG_FILEPATH__)
            if [ "$write_kubeconfig" = 0 ] && [ ! -f "$kubeconfig" ]; then
                refuse "$template uses __KUBECONFIG_FILEPATH__ and there is no kubeconfig at $kubeconfig: pass --token-file, --ca-file and --server (or run in a pod with a service account), or --kubeconfig naming an existing one"
            fi
            value=$(json_escape "$kubeconfig")
            ;;
        *) refuse "$template uses $placeholder, which this script has no value for" ;;
    esac
    conflist_text=${conflist_text//"$placeholder"/"$value"}
done
is_conflist='import json, sys
d = json.load(sys.stdin)
sys.exit(0 if isinstance(d, dict) and isinstance(d.get("plugins"), list) else 1)'
python3 -c "$is_conflist" <<<"$conflist_text" 2>/dev/null ||
    refuse "the conflist rendered from $template is not a JSON object with a plugins list; check the template"

if [ -d "$conf_dir" ]; then lock_conf_dir; fi
read_state

conflist_sha=$(sha_text "$conflist_text")
conflist_status=$(status_of "$conf_target" "$conflist_sha") || exit $?
if [ "$conflist_status" = foreign ] && [ "$force" = 0 ]; then
    refuse "$conf_target was not written by this script (or was changed since); pass --force to replace it (it is kept, and --uninstall puts it back)"
fi
if [ "$write_kubeconfig" = 1 ]; then
    kubeconfig_sha=$(sha_text "$kubeconfig_text")
    kubeconfig_status=$(status_of "$kubeconfig" "$kubeconfig_sha") || exit $?
    if [ "$kubeconfig_status" = foreign ] && refreshed "$kubeconfig"; then kubeconfig_status=ours; fi
    if [ "$kubeconfig_status" = foreign ] && [ "$force" = 0 ]; then
        refuse "$kubeconfig was not written by this script (or was changed since); pass --force to replace it (it is kept, and --uninstall puts it back)"
    fi
fi

prepare_binaries

# ---------------------------------------------------------------------------------------
# Install: write. Binaries first and the conflist last, as install-cni does: a runtime
# treats the node's network as ready once the conflist is there.

mkdir -p -- "$bin_dir" "$conf_dir" "$(dirname -- "$kubeconfig")"
if [ "$locked" = 0 ]; then lock_conf_dir; fi

write_binaries
if [ "$write_kubeconfig" = 1 ]; then
    if announce "$kubeconfig" 0600 "$kubeconfig_status"; then
        # Through a pipe, not a here-string: bash may put a long here-string in a file in
        # \$TMPDIR, and this text holds the token.
        printf '%s' "$kubeconfig_text" | atomic_write "$kubeconfig" 0600
        record kubeconfig "$kubeconfig" "$kubeconfig_sha"
    fi
    say "  (server $server, CA from $ca_file, $credentials)"
fi
if [ "$check_datastore" = 1 ]; then
    # `calico -t` reads one plugin's config: the conflist's calico entry, with the list's
    # name and cniVersion, as a runtime would hand it over.
    calico_conf='import json, sys
d = json.load(sys.stdin)
p = next((p for p in d["plugins"] if p.get("type") == "calico"), None)
if p is None:
    sys.exit(1)
p = dict(p, name=d.get("name", ""), cniVersion=d.get("cniVersion", ""))
print(json.dumps(p))'
    plugin_conf=$(python3 -c "$calico_conf" <<<"$conflist_text") ||
        refuse "--check-datastore: $template has no calico plugin to test"
    if ! answer=$("$bin_dir/calico" -t <<<"$plugin_conf"); then
        say "the datastore check failed: $answer" >&2
        exit 2
    fi
    say "datastore reachable and ready"
fi
if announce "$conf_target" 0644 "$conflist_status"; then
    printf '%s' "$conflist_text" | atomic_write "$conf_target" 0644
    record conflist "$conf_target" "$conflist_sha"
fi
if [ "$mtu" = 0 ]; then mtu_text="0 (auto: calico-node's /var/lib/calico/mtu)"; else mtu_text=$mtu; fi
say "  (from $template: node $node_name, MTU $mtu_text)"

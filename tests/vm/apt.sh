# Sourced: a private apt configuration for one Debian suite, reusing the
# mirror this host's apt is configured with (the host's apt state is not
# touched). Needs $CACHE. After `apt_private SUITE`: APTD (its state
# directory) and APT_OPTS (apt-get/apt-cache options selecting it).

# The mirror comes from the host's apt config (deb822 first, then one-line).
mirror_uri() {
    local f u
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        u=$(awk '/^URIs:/{print $2; exit}' "$f")
        # Skip the security archive: it has no backports suite.
        case $u in *security*) continue ;; esac
        [ -n "$u" ] && { echo "$u"; return 0; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        u=$(awk '$1=="deb" { for (i=2;i<=NF;i++) if ($i !~ /^\[/ && $i !~ /\]$/) { print $i; exit } }' "$f" \
            | grep -v security | head -n1 || true)
        [ -n "$u" ] && { echo "$u"; return 0; }
    done
    return 1
}

# apt_private SUITE [DIR]: state under DIR (default $CACHE/apt-SUITE)
apt_private() {
    APTD=${2:-$CACHE/apt-$1}
    mkdir -p "$APTD/lists/partial" "$APTD/cache/archives/partial"
    APT_OPTS=(-o "Dir::Etc::sourcelist=$APTD/sources.list" -o "Dir::Etc::sourceparts=-"
              -o "Dir::State::Lists=$APTD/lists" -o "Dir::Cache=$APTD/cache"
              -o "Acquire::Languages=none" -o "APT::Sandbox::User=root")
}

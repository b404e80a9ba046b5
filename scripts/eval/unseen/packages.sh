# Sourced by scripts/eval_answers and scripts/eval_kb (after _setup.sh): the unseen set's Debian packages.
# The list is corpus.PACKAGES; the documents are read where Debian installs them, never committed.
UNSEEN_PACKAGES="bash-doc debian-reference-en doc-debian git-doc postgresql-doc-15 debian-handbook"

wants_unseen() {
    local previous=""
    for arg in "$@"; do
        [ "$arg" = "--set=unseen" ] && return 0
        [ "$previous" = "--set" ] && [ "$arg" = "unseen" ] && return 0
        previous="$arg"
    done
    return 1
}

install_unseen_packages() {
    local missing=""
    for package in $UNSEEN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing="$missing $package"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing the unseen set's documents (Debian:$missing)"
        with_heartbeat "apt-get update" apt-get update -qq
        # shellcheck disable=SC2086  # one word per package
        with_heartbeat "apt-get install" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
    else
        say "the unseen set's documents are missing: as root, apt-get install$missing"
        exit 1
    fi
}

#!/usr/bin/env bash
# Proves the alert rules with Prometheus' own tools, in a second or two:
#   promtool check rules   deploy/prometheus/alerts.yml loads (syntax, PromQL, templates);
#   promtool test rules    deploy/prometheus/alerts.test.yml: each alert fires on its
#                          condition once its `for:` has passed, and stays silent on a
#                          healthy series;
#   promtool check config  scripts/prometheus-local.yml, the configuration run.sh runs.
# promtool comes from the machine's package manager when it is missing (Debian's
# `prometheus` package: 2.42 on bookworm). The rules use nothing that changed between
# 2.42 and the 3.x that docker-compose.yml pins, so they load in both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

install_promtool() {
    local sudo=() install
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    install="${sudo[*]:+${sudo[*]} }env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus"
    if ! command -v apt-get >/dev/null; then
        echo "check: promtool is missing and there is no apt-get here: install Prometheus' promtool (2.42 or later) and run this again" >&2
        return 1
    fi
    local running_before=false
    pgrep -x prometheus >/dev/null && running_before=true
    echo "check: installing promtool: $install"
    # A fresh machine may have no package lists yet: update once, then try again.
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
        "${sudo[@]}" apt-get update -qq
        if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
            echo "check: cannot install promtool: '$install' failed (above)" >&2
            return 1
        fi
    fi
    # Only promtool is wanted: where the package started its own server (it listens
    # on :9090, a worker's default port), stop it again.
    if ! $running_before && pgrep -x prometheus >/dev/null; then
        echo "check: stopping the prometheus service the package started"
        "${sudo[@]}" service prometheus stop || true
    fi
    command -v promtool >/dev/null
}

command -v promtool >/dev/null || install_promtool
promtool --version 2>&1 | head -n 1
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
promtool check config scripts/prometheus-local.yml

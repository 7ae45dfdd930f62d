#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real: nginx (the load-balancer config),
# Chromium + ChromeDriver (the docs-in-a-browser test) and a Docker CLI (`docker stack config`
# loads the compose file as a Swarm stack; only the client is used, no engine is started).
# Does nothing when they are present. Needs root or sudo; Debian or Ubuntu (apt-get).
set -euo pipefail

packages=()
command -v nginx >/dev/null 2>&1 || packages+=(nginx)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
need_docker=false
command -v docker >/dev/null 2>&1 || need_docker=true
if [[ ${#packages[@]} -eq 0 && $need_docker == false ]]; then
    echo "==> system packages present (nginx, chromium, chromedriver, docker)"
    exit 0
fi
command -v apt-get >/dev/null 2>&1 || {
    echo "apt-get not found: install ${packages[*]:-} and a Docker CLI (if missing) by hand" >&2
    exit 1
}
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "need root (or sudo) to install: ${packages[*]} docker" >&2
        exit 1
    }
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
echo "==> apt-get update"
"${sudo_cmd[@]}" apt-get update -qq
if [[ $need_docker == true ]]; then
    # Debian 13 / Ubuntu 24.04+ ship the client alone as docker-cli; older releases only in
    # docker.io (with the engine, which is installed but never started here).
    if [[ -n $(apt-cache policy docker-cli 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v none) ]]; then
        packages+=(docker-cli)
    elif [[ -n $(apt-cache policy docker.io 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v none) ]]; then
        packages+=(docker.io)
    else
        echo "no docker-cli or docker.io package in the apt sources: install a Docker CLI" >&2
        exit 1
    fi
fi
echo "==> apt-get install ${packages[*]}"
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"

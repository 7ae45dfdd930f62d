#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (nginx for the load-balancer config,
# Chromium + ChromeDriver for the docs-in-a-browser test). Does nothing when they are present.
set -euo pipefail

packages=()
command -v nginx >/dev/null 2>&1 || packages+=(nginx)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
if [[ ${#packages[@]} -eq 0 ]]; then
    exit 0
fi
echo "==> apt-get install ${packages[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "need root (or sudo) to install: ${packages[*]}" >&2
        exit 1
    }
    sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"

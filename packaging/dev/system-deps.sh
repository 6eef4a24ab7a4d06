#!/usr/bin/env bash
# Installs the Debian packages that roost's development targets need, and only the missing ones.
# Used by `make`; safe to run again. Uses sudo when not root; never asks a question (CI has no stdin).
set -euo pipefail

# swtpm*, tpm2-tools: a real TPM for the identity tests; libtss2-dev + pkg-config + build-essential:
# tpm2-pytss builds from source against them; libubootenv-tool: fw_setenv/fw_printenv for the U-Boot backend.
packages=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config build-essential libubootenv-tool)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "roost: these Debian packages are needed and this system has no apt-get: ${missing[*]}" >&2
  echo "roost: install their equivalents with your package manager, then run make again." >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "roost: need root to install ${missing[*]}; install sudo or run: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo -n)
fi
echo "roost: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Herald builds with the Rust toolchain the machine provides (rustup's stable); Debian's
# own rustc is too old. Fail early and clearly instead of in the middle of a build.
set -euo pipefail
need_minor=85
if ! command -v cargo >/dev/null 2>&1; then
    echo "Herald needs a Rust toolchain >= 1.${need_minor} (cargo not found; install it with rustup)" >&2
    exit 1
fi
minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if ((minor < need_minor)); then
    echo "Herald needs Rust >= 1.${need_minor}, found $(rustc --version)" >&2
    exit 1
fi

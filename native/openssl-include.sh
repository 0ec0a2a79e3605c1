#!/bin/sh
# Prints a directory whose openssl/ holds Debian's OpenSSL headers (the generic ones from
# /usr/include/openssl and the architecture's configuration headers), for binding.gyp.
#
# Why: node's own include directory (which node-gyp puts on the include path) carries the
# headers of the OpenSSL built into node, and a plain #include <openssl/ssl.h> would find those.
# The addon links Debian's libssl/libcrypto statically with their symbols kept private (see
# binding.gyp), so it must be compiled against Debian's headers: one OpenSSL, never a mix of
# two (a mix crashes inside SSL_do_handshake).
set -eu
out="${1:?usage: openssl-include.sh OUTDIR}"
inc=$(pkg-config --variable=includedir openssl)
arch=$(gcc -print-multiarch 2>/dev/null || true)
rm -rf "$out/openssl"
mkdir -p "$out/openssl"
for f in "$inc"/openssl/*.h; do ln -sf "$f" "$out/openssl/"; done
if [ -n "$arch" ] && [ -d "$inc/$arch/openssl" ]; then
  for f in "$inc/$arch"/openssl/*.h; do ln -sf "$f" "$out/openssl/"; done
fi
echo "$out"

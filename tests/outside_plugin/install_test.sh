#!/bin/sh
# install_test.sh BUILD_DIR SOURCE_DIR — installs the build into a fresh prefix, builds
# tests/outside_plugin as an outside project would (find_package, then pkg-config) and runs each
# plugin under the installed `mistral4 conform` on the text_tiny golden case. CTest
# install_outside_plugin.
set -eu
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
want="plugin:outside on text_tiny: 6 passed, 0 failed, 0 errors, 32 not implemented"

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" || { cat "$tmp/install.log"; exit 1; }
for f in bin/mistral4 include/mistral4/plugin.h; do
    [ -e "$tmp/prefix/$f" ] || { echo "not installed: $f"; exit 1; }
done

check() { # check PLUGIN.so HOW: the installed command runs it and prints the expected line
    got=$("$tmp/prefix/bin/mistral4" conform --backend "plugin:$1" --case "$src/golden/cases/text_tiny" --quiet) || {
        echo "$2: mistral4 conform failed: $got"; exit 1; }
    [ "$got" = "$want" ] || { echo "$2: got '$got', expected '$want'"; exit 1; }
    echo "$2: $got"
}

# find_package(mistral4) from the prefix: nothing of the source tree on the include path
cmake -S "$src/tests/outside_plugin" -B "$tmp/outside" -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/configure.log" ||
    { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/outside" >"$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
[ "$(cat "$tmp/outside/mistral4-path.txt")" = "$tmp/prefix/bin/mistral4" ] ||
    { echo "mistral4::mistral4 is $(cat "$tmp/outside/mistral4-path.txt"), not the installed one"; exit 1; }
check "$tmp/outside/outside_plugin.so" find_package

# pkg-config: the .pc file alone
pc=$(dirname "$(find "$tmp/prefix" -name mistral4.pc)")
cflags=$(PKG_CONFIG_PATH="$pc" pkg-config --cflags mistral4)
cc $cflags -std=c99 -Wall -Wextra -Wno-unused-parameter -Werror -shared -fPIC -o "$tmp/pc_plugin.so" "$src/tests/outside_plugin/outside_plugin.c" -lm
check "$tmp/pc_plugin.so" pkg-config

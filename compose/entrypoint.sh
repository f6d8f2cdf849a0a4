#!/bin/sh
# Entry point of the Cartwise images: `cartwise "$@"`, with each Docker secret mounted as
# /run/secrets/CARTWISE_<NAME> exported as that variable first. Settings come only from the environment
# (cartwise/settings.py), and secrets kept as files stay out of the compose file and `docker inspect`.
set -eu
for secret in /run/secrets/CARTWISE_*; do
    [ -f "$secret" ] || continue
    name=$(basename "$secret")
    value=$(cat "$secret")
    export "$name=$value"
done
exec cartwise "$@"

#!/bin/sh
# OpenSSL as shell scripts use it: the engine "pkcs11" (libp11) over p11-kit-client.so signs a file
# COUNT times with `openssl dgst -sign`, each a new process; the EC key pair is made first with
# pkcs11-tool. Prints "n OK" or "n FAILED" per signature; exit 1 when one failed.
# Environment: CKDEMO_P11_MODULE, CKDEMO_TOKEN_LABEL, CKDEMO_USER_PIN. Usage: openssl_loop.sh COUNT
set -u
count=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pkcs11-tool --module "$CKDEMO_P11_MODULE" --login --pin "$CKDEMO_USER_PIN" --keypairgen \
    --key-type EC:prime256v1 --id 0e --label openssl-loop >/dev/null 2>&1 || exit 2
cat > "$work/openssl.cnf" <<CONF
openssl_conf = openssl_init
[openssl_init]
engines = engine_section
[engine_section]
pkcs11 = pkcs11_section
[pkcs11_section]
engine_id = pkcs11
MODULE_PATH = $CKDEMO_P11_MODULE
init = 0
CONF
echo "data to sign" > "$work/data"
failed=0
n=0
while [ "$n" -lt "$count" ]; do
    if OPENSSL_CONF="$work/openssl.cnf" openssl dgst -engine pkcs11 -keyform engine -sha256 \
        -sign "pkcs11:token=$CKDEMO_TOKEN_LABEL;object=openssl-loop;type=private;pin-value=$CKDEMO_USER_PIN" \
        -out "$work/sig" "$work/data" >/dev/null 2>&1; then
        echo "$n OK"
    else
        echo "$n FAILED"
        failed=1
    fi
    n=$((n + 1))
done
exit $failed

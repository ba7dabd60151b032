#!/bin/sh
# Generate the secrets compose.yaml mounts, as files under ./var/secrets (git-ignored).
#
#   deploy/compose/make-secrets.sh            # once, before `docker compose up`
#   deploy/compose/make-secrets.sh --broker   # also point the workers at RabbitMQ
#                                             # (then: docker compose --profile broker up)
#
# Random values are made only when missing, so running it again keeps every password;
# the files derived from them (DSNs, pgbouncer's auth file, redis.conf) are rewritten.
# SHELFWISE_SECRETS_DIR overrides the directory. Needs only sh and openssl.
#
# The directory is private (0700); the files in it are world-readable (0644) because
# compose bind-mounts them as they are and each container reads them as its own user
# (shelfwise 10001, postgres, redis, grafana, nginx).
set -eu

broker=0
for arg in "$@"; do
    case "$arg" in
        --broker) broker=1 ;;
        *) echo "usage: $0 [--broker]" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${SHELFWISE_SECRETS_DIR:-$root/var/secrets}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"

# write NAME VALUE: the file holds VALUE with no trailing newline.
write() {
    printf '%s' "$2" > "$dir/$1.tmp"
    chmod 0644 "$dir/$1.tmp"
    mv "$dir/$1.tmp" "$dir/$1"
}

# random NAME BYTES: a new hex value, only when the file does not exist yet.
random() {
    [ -s "$dir/$1" ] || write "$1" "$(openssl rand -hex "$2")"
}

random postgres_password 24
random redis_password 24
random rabbitmq_password 24
random grafana_admin_password 16
# Shelfwise refuses secrets shorter than 32 characters in production: 64 hex digits.
random shelfwise_jwt_secret 32
random shelfwise_cursor_secret 32
random shelfwise_session_secret 32

pg=$(cat "$dir/postgres_password")
redis=$(cat "$dir/redis_password")
rabbit=$(cat "$dir/rabbitmq_password")

# The API and workers go through pgbouncer; LISTEN, the relay's lock and migrations go
# straight to PostgreSQL (docs/deploy.md, "pgbouncer caveats").
write database_url "postgresql://shelfwise:$pg@pgbouncer:6432/shelfwise"
write shelfwise_direct_database_url "postgresql://shelfwise:$pg@postgres:5432/shelfwise"
write pgbouncer_userlist "\"shelfwise\" \"$pg\""
write redis_url "redis://:$redis@redis:6379/0"
# Sessions survive a Redis restart: append-only file on the redis volume, fsync'd every
# second, no RDB snapshots (docs/decisions/0030-redis-keeps-sessions-across-restarts.md).
write redis.conf "requirepass $redis
save \"\"
appendonly yes
appendfsync everysec
"
write rabbitmq.conf "default_user = shelfwise
default_pass = $rabbit
"
if [ "$broker" = 1 ]; then
    write shelfwise_broker_url "amqp://shelfwise:$rabbit@rabbitmq:5672/%2F"
elif [ ! -e "$dir/shelfwise_broker_url" ]; then
    write shelfwise_broker_url ""  # empty: the workers publish nothing
fi

# nginx's certificate: self-signed for localhost; replace both files with real ones.
if [ ! -s "$dir/tls.key" ] || [ ! -s "$dir/tls.crt" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
    chmod 0644 "$dir/tls.key" "$dir/tls.crt"
fi

echo "secrets in $dir"

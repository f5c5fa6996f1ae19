#!/usr/bin/env bash
# Start PostgreSQL, Redis and RabbitMQ on this machine if one is down, then make sure the
# databases and the RabbitMQ vhost the project uses exist. Idempotent.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do up "$1" && return 0; sleep 1; done; echo "port $1 did not open" >&2; return 1; }

if ! up 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_port 5432
fi
if ! up 6379; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi
if ! up 5672; then
  rabbitmq-server -detached
  wait_port 5672
fi
# rabbitmqctl answers only once the node has fully booted.
for _ in $(seq 1 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
# The management plugin: Flower reads each queue's depth from its HTTP API (port 15672).
if ! rabbitmq-plugins -q list -e -m 2>/dev/null | grep -qx rabbitmq_management; then
  rabbitmq-plugins -q enable rabbitmq_management >/dev/null
fi
wait_port 15672

for db in notify notify_bench; do
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $db"
done
for vhost in notify_test notify_bench; do
  rabbitmqctl -q list_vhosts | grep -qx "$vhost" || rabbitmqctl -q add_vhost "$vhost"
  rabbitmqctl -q set_permissions -p "$vhost" guest ".*" ".*" ".*" >/dev/null
done

"""The production topology on one machine, without Docker (`shelfwise cluster`, `make cluster`).

PostgreSQL (embedded or `DATABASE_URL`), pgbouncer in transaction mode in front of it,
redis-server, N API instances, M workers and nginx as the load balancer, each a child
process supervised by `Supervisor` (restarted with backoff when it dies, stopped in order
on Ctrl-C). The same pieces build the test harness (`tests/cluster_support.py`).

- `binaries`: finding nginx/pgbouncer/redis-server/openssl, or the apt-get line.
- `tls`: the self-signed certificate nginx terminates TLS with.
- `pgbouncer`, `nginx`: configuration rendered under the run directory.
- `topology`: which processes, on which ports, with which environment.
- `supervisor`: child processes, readiness, restarts, ordered shutdown.
- `keeper`: a tiny process that kills every child's process group once the runner is
  gone, however it went (a `kill -9` leaves no orphans).
- `runner`: `shelfwise cluster` itself.
"""

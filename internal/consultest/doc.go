// Package consultest runs real Consul agents (`consul agent -dev`) on
// loopback ports for tests, side by side: every agent gets its own free
// ports and is stopped when its test ends. Start runs a plain dev agent,
// StartACL one with ACLs on and default deny, StartTLS one whose API is
// HTTPS only; StartCluster runs a datacenter of servers and client agents
// (not in dev mode: data dirs on disk, raft between the servers) whose
// members a test can kill, restart and partition.
//
// The binary comes from $INMESH_CONSUL, `consul` on PATH, or the cache that
// scripts/install-consul.sh fills. Without one, tests skip and say how to
// install it; under CI (CI set in the environment) a missing agent fails the
// test instead, so a green CI never hides a skipped Consul suite.
package consultest

// Package consultest runs real Consul agents (`consul agent -dev`) on
// loopback ports for tests, side by side: every agent gets its own free
// ports and is stopped when its test ends.
//
// The binary comes from $INMESH_CONSUL, `consul` on PATH, or the cache that
// scripts/install-consul.sh fills. Without one, tests skip and say how to
// install it; under CI (CI set in the environment) a missing agent fails the
// test instead, so a green CI never hides a skipped Consul suite.
package consultest

package meshtest

import "fmt"

// BenchPolicy exercises the full chain on plain backends at addr1 (v1) and
// addr2 (v2): a header route that does not match, a weighted split,
// round-robin pick, a circuit breaker, retry bookkeeping with a budget,
// outlier detection. timeout is a line of billing's policy ("" for none).
func BenchPolicy(addr1, addr2, timeout string) string {
	return fmt.Sprintf(`
defaults: {tls: disable} # plain test backends
services:
  billing:
    endpoints:
      - {address: %[1]s, labels: {version: v1}}
      - {address: %[2]s, labels: {version: v2}}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    %[3]s
    retry: {attempts: 2, backoff: {initial: 1ms, max: 2ms}}
    circuit_breaker: {consecutive_failures: 1000, open_for: 1s}
    outlier_detection: {consecutive_failures: 1000}
    routes:
      - name: canary
        match: {headers: {x-canary: "true"}}
        split: [{subset: v2, weight: 100}]
      - name: default
        split: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
`, addr1, addr2, timeout)
}

// FleetPolicy is one policy for a test fleet of billing (at billingAddr),
// enrollment, progress and admin: billing lets enrollment POST /charge,
// admin do anything, and nobody else.
func FleetPolicy(billingAddr string) string {
	return fmt.Sprintf(`
version: fleet-1
trust_domain: mesh.local
services:
  billing:
    endpoints: [{address: %s}]
    authorization:
      default: deny
      rules:
        - {from: [enrollment], paths: [/charge], methods: [POST]}
        - {from: [admin]}
  enrollment: {}
  progress: {}
  admin: {}
`, billingAddr)
}

// Command platform is the inmesh demo: the learning platform of our story
// in one process on loopback, playing a scripted scenario and telling it
// from the mesh's own sources. enrollment calls billing (v1 and a v2
// canary), catalog (flaky: retries absorb its 503s), progress (dead: its
// breaker opens and fails fast), notifications and, over gRPC, grades (the
// stock gRPC health service behind meshgrpc.ServerOptions, called through
// meshgrpc.DialOptions). The phases:
//
//  1. steady traffic, billing's canary taking 10%;
//  2. a canary shift to 50%: the demo rewrites the policy file enrollment's
//     mesh watches (mesh.WithPolicyFile) and waits until the mesh applied
//     the new version;
//  3. a dependency outage: notifications' backend fails, enrollment's
//     breaker for it opens, the backend heals and the breaker closes;
//  4. an unauthorized caller: progress calls billing (HTTP) and grades
//     (gRPC), and their meshes deny it;
//  5. overload: recommendations, saturated, is offered 1.5x its capacity;
//     the adaptive concurrency limit keeps it at capacity.
//
// The report per phase reads enrollment's OpenTelemetry metrics (the SDK's
// manual reader: the split, attempts per call, p50/p99, failures by layer,
// breaker transitions) and its admin handler over HTTP: /config (the
// policy version and updates applied) and /explain (billing's split after
// the shift, notifications' breaker in the outage, the authorization
// progress meets). The meshes' warnings go to stderr
// as they happen, one line each, prefixed by the workload.
//
//	go run ./examples/platform [-policy FILE] [-duration 3s] [-admin 127.0.0.1:9901] [-consul 127.0.0.1:8500]
//
// Without -policy it uses the embedded mesh.yaml; -duration is the length
// of a phase (the outage takes longer, the unauthorized caller's half);
// -admin serves enrollment's admin handler at ADDR under /debug/inmesh/
// (without it, on a free port of 127.0.0.1). -consul ADDR plays the same
// story on a Consul agent: the policy in KV (under inmesh-demo/), every
// backend registered as a Connect-native instance, identities from the
// Connect CA, authorization from service-intentions, billing's subsets,
// canary route and split from a service-resolver, a service-router and a
// service-splitter; the canary phase edits the splitter. What the demo
// writes to the agent it deletes at the end.
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"
)

//go:embed mesh.yaml
var embeddedPolicy []byte

func main() {
	policyFile := flag.String("policy", "", "policy file (default: the embedded mesh.yaml)")
	duration := flag.Duration("duration", 3*time.Second, "the length of a phase; the whole run takes about five times as long")
	workers := flag.Int("workers", 4, "concurrent callers")
	admin := flag.String("admin", "", "serve enrollment's admin handler at `ADDR` under /debug/inmesh/ (default: a free port of 127.0.0.1)")
	consulAddr := flag.String("consul", "", "run the story on the Consul agent at `ADDR` (host:port of its HTTP API): policy in KV, Connect, intentions, billing's canary in a service-splitter")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *policyFile, *admin, *consulAddr, *duration, *workers, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "platform:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, policyFile, admin, consulAddr string, phase time.Duration, workers int, out, logs io.Writer) error {
	data := embeddedPolicy
	source := "embedded mesh.yaml"
	if policyFile != "" {
		var err error
		if data, err = os.ReadFile(policyFile); err != nil {
			return err
		}
		source = policyFile
	}
	if consulAddr != "" {
		source += " in the Consul agent at " + consulAddr + " (KV " + consulPrefix + "/, config entries, intentions)"
	}
	fmt.Fprintf(out, "inmesh platform demo: policy from %s, %d callers, phases of %v\n", source, workers, phase)
	res, err := simulate(ctx, options{policy: data, phase: phase, workers: workers, admin: admin, logs: logs, out: out, consul: consulAddr})
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	fmt.Fprintf(out, "\nevery call is mTLS; enrollment calls as %s; its admin page was %s\n", res.identity, res.adminURL)
	tell(out, res)
	return nil
}

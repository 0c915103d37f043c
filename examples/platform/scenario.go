package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
	"github.com/inmesh/inmesh/policy"
)

// ---- the scripted story ----

// options configure one run of the scenario.
type options struct {
	policy  []byte        // the policy document
	phase   time.Duration // the length of a phase; some take half, the outage twice
	workers int           // enrollment's concurrent callers
	admin   string        // the admin server's address; "" is 127.0.0.1:0
	logs    io.Writer     // the meshes' logs and the phases as they start; nil discards them
	out     io.Writer     // the admin URL, as soon as it serves; nil discards it
	consul  string        // a Consul agent's HTTP address: the story runs on it; "" runs it on the policy file
}

// phase is what one phase of the story saw.
type phase struct {
	name    string
	elapsed time.Duration
	stats   *stats      // enrollment's callers
	metrics snapshot    // enrollment's instruments, during the phase
	fleet   snapshot    // the other meshes' instruments, during the phase
	config  adminConfig // /config at the end of the phase
	notes   []string    // what the demo did and saw
	// explained are the explanations /explain gave in the phase.
	explained []*mesh.Explanation
}

func (p *phase) note(format string, args ...any) {
	p.notes = append(p.notes, fmt.Sprintf(format, args...))
}

// outcome is what one run of the demo saw.
type outcome struct {
	identity string // enrollment's SPIFFE ID
	adminURL string
	stats    *stats           // every phase but the overload's
	hits     map[string]int64 // requests each service's servers received
	phases   []*phase
	denied   result // progress calling billing
	// rpcDenied is progress calling grades over gRPC; rpcUnknown,
	// enrollment asking grades about a service it does not know.
	rpcDenied, rpcUnknown error
	overload              *overloadResult
	policyEdited          bool // the canary shift was applied from the edited file
}

// scenario is one run in progress.
type scenario struct {
	o           options
	sink        *logSink
	m           *mesh.Mesh
	reader      *sdkmetric.ManualReader // enrollment's
	fleetReader *sdkmetric.ManualReader // the fleet's and the intruder's
	admin       *adminServer
	traffic     *traffic
	res         *outcome
}

// simulate starts the fleet and enrollment's mesh on the policy, plays the
// story, and returns what happened.
func simulate(ctx context.Context, o options) (*outcome, error) {
	if o.logs == nil {
		o.logs = io.Discard
	}
	if o.out == nil {
		o.out = io.Discard
	}
	if o.admin == "" {
		o.admin = "127.0.0.1:0"
	}
	doc, err := policy.Parse(o.policy)
	if err != nil {
		return nil, err
	}
	sink := newLogSink(o.logs)
	sc := &scenario{o: o, sink: sink}
	defer sink.done()
	logger := sink.logger()
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	fleetReader := sdkmetric.NewManualReader()
	fleetMP := sdkmetric.NewMeterProvider(sdkmetric.WithReader(fleetReader))
	defer func() { _ = fleetMP.Shutdown(context.Background()) }()
	var world *consulWorld
	if o.consul != "" {
		if world, err = newConsulWorld(startCtx, o.consul); err != nil {
			return nil, err
		}
		if err := world.setUp(startCtx, doc); err != nil {
			_ = world.tearDown()
			return nil, err
		}
		defer func() {
			if err := world.tearDown(); err != nil {
				logger.Warn("cleaning up the Consul agent", "err", err)
			}
		}()
	}
	fleet, err := startFleet(startCtx, doc, world, logger, fleetMP)
	if err != nil {
		return nil, err
	}
	defer fleet.close()

	// enrollment watches a file of its own, which the canary phase edits.
	dir, err := os.MkdirTemp("", "inmesh-demo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	policyPath := filepath.Join(dir, "mesh.yaml")
	if err := writePolicy(policyPath, withAddresses(o.policy, fleet.moved)); err != nil {
		return nil, err
	}
	// enrollment's metrics: read by the report (the manual reader) and
	// served as Prometheus text at the admin handler's /metrics, as an
	// application wires them (see mesh.WithMetricsHandler).
	reader := sdkmetric.NewManualReader()
	registry := prometheus.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return nil, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithReader(exporter))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	source := mesh.WithPolicyFile(policyPath)
	if world != nil {
		source = world.option()
	}
	m, err := mesh.New(startCtx, mesh.WithService("enrollment"), source,
		mesh.WithLogger(logger), mesh.WithMeterProvider(mp),
		mesh.WithMetricsHandler(promhttp.HandlerFor(registry, promhttp.HandlerOpts{})))
	if err != nil {
		return nil, err
	}
	defer m.Close()
	admin, err := serveAdmin(o.admin, m)
	if err != nil {
		return nil, err
	}
	defer admin.close()
	fmt.Fprintf(o.out, "admin page of enrollment's mesh: %s (config, endpoints, breakers, protections, certs, explain, metrics)\n", admin.url)

	// progress has no business charging students: billing's authorization
	// says so, and its mesh denies the call before billing's code runs.
	intruderSource := mesh.WithPolicy(doc)
	if world != nil {
		intruderSource = world.option()
	}
	intruder, err := mesh.New(startCtx, mesh.WithService("progress"), intruderSource,
		mesh.WithLogger(logger), mesh.WithMeterProvider(fleetMP))
	if err != nil {
		return nil, err
	}
	defer intruder.Close()

	// gRPC: grades is reached through the mesh's resolver, balancer,
	// interceptors and credentials, from the same policy.
	grades, err := grpc.NewClient("mesh:///grades", meshgrpc.DialOptions(m)...)
	if err != nil {
		return nil, err
	}
	defer grades.Close()
	intruderConn, err := grpc.NewClient("mesh:///grades", meshgrpc.DialOptions(intruder)...)
	if err != nil {
		return nil, err
	}
	defer intruderConn.Close()

	sc.m, sc.reader, sc.fleetReader, sc.admin = m, reader, fleetReader, admin
	sc.res = &outcome{adminURL: admin.url, hits: map[string]int64{}}
	if id, err := m.Identity(); err == nil {
		sc.res.identity = id.ID.String()
	}
	healthClient := healthpb.NewHealthClient(grades)
	sc.traffic = startTraffic(ctx, m.HTTPClient(), healthClient, o.workers)
	defer sc.traffic.halt()
	sc.res.stats = sc.traffic.total

	d := o.phase
	steps := []func() error{
		func() error { return sc.run(ctx, "steady traffic", func(p *phase) error { return sleep(ctx, d) }) },
		func() error {
			if world != nil {
				return sc.canaryOnConsul(ctx, world, 50)
			}
			return sc.canary(ctx, policyPath, 50)
		},
		func() error {
			return sc.run(ctx, "dependency outage", func(p *phase) error { return sc.outage(ctx, p, fleet) })
		},
		func() error {
			return sc.run(ctx, "unauthorized caller", func(p *phase) error {
				return sc.intrude(ctx, p, intruder, healthpb.NewHealthClient(intruderConn))
			})
		},
		func() error { sc.traffic.halt(); return nil }, // the overload phase has recommendations to itself
		func() error {
			return sc.run(ctx, "overload", func(p *phase) error {
				sc.res.overload = overload(ctx, m, fleet.hits["recommendations"], d)
				return nil
			})
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	for svc, n := range fleet.hits {
		sc.res.hits[svc] = n.Load()
	}
	// grades' own answer to a question it cannot answer: the mesh passes
	// an application's status on untouched.
	_, sc.res.rpcUnknown = healthClient.Check(ctx, &healthpb.HealthCheckRequest{Service: "lunch-menu"})
	return sc.res, nil
}

// run plays one phase: body, with the traffic counted in the phase's stats
// and the instruments collected before and after it.
func (sc *scenario) run(ctx context.Context, name string, body func(*phase) error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p := &phase{name: name, stats: newStats()}
	sc.sink.say("== phase %d: %s", len(sc.res.phases)+1, name)
	before, err := collect(ctx, sc.reader)
	if err != nil {
		return err
	}
	fleetBefore, err := collect(ctx, sc.fleetReader)
	if err != nil {
		return err
	}
	sc.traffic.phase.Store(p.stats)
	start := time.Now()
	err = body(p)
	sc.traffic.phase.Store(nil)
	p.elapsed = time.Since(start)
	if err != nil {
		return fmt.Errorf("platform: phase %s: %w", name, err)
	}
	after, err := collect(ctx, sc.reader)
	if err != nil {
		return err
	}
	fleetAfter, err := collect(ctx, sc.fleetReader)
	if err != nil {
		return err
	}
	p.metrics, p.fleet = after.sub(before), fleetAfter.sub(fleetBefore)
	if p.config, err = sc.admin.config(ctx); err != nil {
		return err
	}
	sc.res.phases = append(sc.res.phases, p)
	return nil
}

// canary rewrites billing's split in enrollment's policy file to share
// percent for v2, waits until the mesh applied the new version, then plays
// the phase on it.
func (sc *scenario) canary(ctx context.Context, path string, share int) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	from := sc.m.PolicyVersion()
	edited, version, err := shiftCanary(data, share)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := writePolicy(path, edited); err != nil {
		return err
	}
	sc.sink.say("rewrote %s: billing v1 %d / v2 %d, version %s -> %s", path, 100-share, share, from, version)
	if !waitFor(ctx, 10*time.Second, func() bool { return sc.m.PolicyVersion() == version }) {
		return fmt.Errorf("platform: the mesh did not apply version %s of %s within 10s (in force: %s)", version, path, sc.m.PolicyVersion())
	}
	applied := time.Since(start)
	sc.res.policyEdited = true
	return sc.run(ctx, fmt.Sprintf("canary shift to %d%%", share), func(p *phase) error {
		p.note("policy file rewritten (billing v1 %d / v2 %d, version %s -> %s); the mesh applied it %v later",
			100-share, share, from, version, applied.Round(time.Millisecond))
		sc.explain(ctx, p, "POST", "http://billing/charge", "")
		return sleep(ctx, sc.o.phase)
	})
}

// canaryOnConsul edits billing's service-splitter to share percent for
// v2, waits until enrollment's mesh routes by it (its Explain of a charge
// shows the new split), then plays the phase on it.
func (sc *scenario) canaryOnConsul(ctx context.Context, world *consulWorld, share int) error {
	start := time.Now()
	if err := world.shiftCanary(ctx, share); err != nil {
		return err
	}
	sc.sink.say("edited billing's service-splitter: v1 %d / v2 %d", 100-share, share)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://billing/charge", nil)
	if err != nil {
		return err
	}
	inForce := func() bool {
		ex, err := sc.m.Explain(req)
		if err != nil {
			return false
		}
		for _, ws := range ex.Split {
			if ws.Subset == "v2" && ws.Weight*100 == share*totalWeight(ex.Split) {
				return true
			}
		}
		return false
	}
	if !waitFor(ctx, 10*time.Second, inForce) {
		return fmt.Errorf("platform: enrollment's mesh did not apply billing's edited service-splitter within 10s")
	}
	applied := time.Since(start)
	sc.res.policyEdited = true
	return sc.run(ctx, fmt.Sprintf("canary shift to %d%%", share), func(p *phase) error {
		p.note("service-splitter billing edited (v1 %d / v2 %d); enrollment's mesh routed by it %v later",
			100-share, share, applied.Round(time.Millisecond))
		sc.explain(ctx, p, "POST", "http://billing/charge", "")
		return sleep(ctx, sc.o.phase)
	})
}

// totalWeight is the sum of a split's weights.
func totalWeight(split []mesh.WeightedSubset) int {
	total := 0
	for _, ws := range split {
		total += ws.Weight
	}
	return total
}

// outage fails notifications' backend until enrollment's breaker for it
// opened, then heals it and waits for the breaker to close.
func (sc *scenario) outage(ctx context.Context, p *phase, f *fleet) error {
	transitions := func(to string) float64 {
		s, err := collect(ctx, sc.reader)
		if err != nil {
			return 0
		}
		return s.value("inmesh.circuit_breaker.transitions", match{"server.address": "notifications", "to": to})
	}
	opened, closed := transitions("open"), transitions("closed")
	start := time.Now()
	f.down.Store(true)
	p.note("notifications' backend fails every call (503)")
	if err := sleep(ctx, sc.o.phase); err != nil {
		return err
	}
	if waitFor(ctx, 10*time.Second, func() bool { return transitions("open") > opened }) {
		p.note("its breaker opened; calls failed fast in the caller")
		sc.explain(ctx, p, "POST", "http://notifications/send", "")
	} else {
		p.note("its breaker did not open")
	}
	f.down.Store(false)
	healed := time.Now()
	p.note("the backend healed %v after the outage began", healed.Sub(start).Round(time.Millisecond))
	if waitFor(ctx, 10*time.Second, func() bool { return transitions("closed") > closed }) {
		p.note("the breaker closed again %v after the backend healed (a half-open probe succeeded)", time.Since(healed).Round(time.Millisecond))
	} else {
		p.note("the breaker did not close within 10s")
	}
	return sleep(ctx, sc.o.phase/2)
}

// intrude has progress call billing (HTTP) and grades (gRPC), which their
// authorization denies, while enrollment's traffic goes on.
func (sc *scenario) intrude(ctx context.Context, p *phase, intruder *mesh.Mesh, grades healthpb.HealthClient) error {
	const tries = 3
	for i := range tries {
		r := call(ctx, intruder.HTTPClient(), "POST", "http://billing/charge")
		_, rpcErr := grades.Check(ctx, &healthpb.HealthCheckRequest{Service: "grades"})
		if i == 0 {
			sc.res.denied, sc.res.rpcDenied = r, rpcErr
		}
	}
	p.note("progress called billing POST /charge %d times over HTTP and grades Check %d times over gRPC", tries, tries)
	sc.explain(ctx, p, "POST", "http://billing/charge", "progress")
	sc.explain(ctx, p, "POST", "grpc://grades/grpc.health.v1.Health/Check", "progress")
	return sleep(ctx, sc.o.phase/2)
}

// explain notes what the admin handler's /explain says of method and
// target, as caller.
func (sc *scenario) explain(ctx context.Context, p *phase, method, target, caller string) {
	ex, err := sc.admin.explain(ctx, method, target, caller)
	if err != nil {
		p.note("explain %s %s: %v", method, target, err)
		return
	}
	as := ""
	if caller != "" {
		as = " as " + caller
	}
	p.note("/explain %s %s%s: %s", method, target, as, summary(ex))
	p.explained = append(p.explained, ex)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitFor polls cond until it holds (true), limit passes or ctx ends (false).
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) || sleep(ctx, 20*time.Millisecond) != nil {
			return false
		}
	}
}

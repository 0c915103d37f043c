package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
)

// ---- report ----

// Instruments the report reads (DESIGN, "Telemetry names").
const (
	metricHTTPClient  = "http.client.request.duration"
	metricAttempts    = "inmesh.client.attempts"
	metricTransitions = "inmesh.circuit_breaker.transitions"
	metricAuthz       = "inmesh.authz.decisions"
	attrService       = "server.address"
)

// reportPhase tells one phase from enrollment's instruments, the fleet's
// and enrollment's admin handler.
func reportPhase(out io.Writer, n int, p *phase) {
	fmt.Fprintf(out, "\nphase %d: %s (%v; policy %s in force, %d updates applied, %d rejected, per /config)\n",
		n, p.name, p.elapsed.Round(10_000_000), p.config.Version, p.config.UpdatesApplied, p.config.UpdatesRejected)
	for _, s := range p.notes {
		fmt.Fprintf(out, "  - %s\n", s)
	}
	m := p.metrics
	if split := m.by(metricHTTPClient, "inmesh.subset", match{attrService: "billing"}); split["v1"]+split["v2"] > 0 {
		v1, v2 := split["v1"], split["v2"]
		fmt.Fprintf(out, "  billing split: v1 %.0f, v2 %.0f (%.1f%% v2)\n", v1, v2, 100*v2/(v1+v2))
	}
	services := p.services()
	if len(services) > 0 {
		fmt.Fprintf(out, "  %-20s %6s %9s %9s %9s  %s\n", "service", "calls", "attempts", "p50", "p99", "failures by layer (error.type)")
	}
	for _, svc := range services {
		name, label := metricHTTPClient, svc
		if m.count(name, match{attrService: svc}) == 0 {
			name, label = m.rpcClientDuration(), svc+" (gRPC)"
		}
		calls := m.count(name, match{attrService: svc})
		attempts := "-"
		if a := m.value(metricAttempts, match{attrService: svc}); a > 0 && calls > 0 {
			attempts = fmt.Sprintf("%.2f", a/float64(calls))
		}
		p50, _ := m.quantile(name, 0.50, match{attrService: svc})
		p99, _ := m.quantile(name, 0.99, match{attrService: svc})
		var failures []string
		for layer, n := range m.by(name, "error.type", match{attrService: svc}) {
			if layer != "" {
				failures = append(failures, fmt.Sprintf("%s=%.0f", layer, n))
			}
		}
		sort.Strings(failures)
		if len(failures) == 0 {
			failures = []string{"none"}
		}
		fmt.Fprintf(out, "  %-20s %6d %9s %9s %9s  %s\n", label, calls, attempts, ms(p50), ms(p99), strings.Join(failures, " "))
	}
	if t := p.transitions(); len(t) > 0 {
		fmt.Fprintf(out, "  breaker transitions: %s\n", strings.Join(t, ", "))
	}
	if d := p.fleet.by(metricAuthz, "inmesh.service", match{"inmesh.authz.decision": "deny"}); len(d) > 0 {
		var parts []string
		for svc, n := range d {
			parts = append(parts, fmt.Sprintf("%s denied %.0f", svc, n))
		}
		sort.Strings(parts)
		fmt.Fprintf(out, "  authorization (the destinations' meshes): %s\n", strings.Join(parts, ", "))
	}
}

// services are the destinations enrollment called in the phase.
func (p *phase) services() []string {
	seen := map[string]bool{}
	for _, name := range []string{metricHTTPClient, p.metrics.rpcClientDuration()} {
		for svc := range p.metrics.by(name, attrService, nil) {
			if svc != "" {
				seen[svc] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for svc := range seen {
		out = append(out, svc)
	}
	sort.Strings(out)
	return out
}

// transitions are the breaker state changes of the phase, "service
// from->to n", in the order a breaker goes through them.
func (p *phase) transitions() []string {
	type key struct{ svc, from, to string }
	counts := map[key]float64{}
	p.metrics.each(metricTransitions, nil, func(s series) {
		svc, _ := s.attrs.Value(attrService)
		from, _ := s.attrs.Value("from")
		to, _ := s.attrs.Value("to")
		if s.value > 0 {
			counts[key{svc.Emit(), from.Emit(), to.Emit()}] += s.value
		}
	})
	order := map[string]int{"closed": 0, "open": 1, "half-open": 2}
	keys := make([]key, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.svc != b.svc {
			return a.svc < b.svc
		}
		if order[a.from] != order[b.from] {
			return order[a.from] < order[b.from]
		}
		return order[a.to] < order[b.to]
	})
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %s->%s %.0f", k.svc, k.from, k.to, counts[k]))
	}
	return out
}

// ms formats seconds as milliseconds.
func ms(s float64) string {
	if s == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fms", s*1000)
}

// describeRPC says how one gRPC call ended: a failure of the mesh, with
// its layer, or the destination's own status, which the mesh passed on
// untouched.
func describeRPC(err error) string {
	if ce := meshgrpc.FromStatus(err); ce != nil {
		return fmt.Sprintf("refused by the mesh at layer %s, status %s (%v)", ce.Layer, grpcstatus.Code(err), ce.Err)
	}
	if err != nil {
		st := grpcstatus.Convert(err)
		return fmt.Sprintf("the application's own %s %q, passed on untouched by the mesh", st.Code(), st.Message())
	}
	return "answered"
}

// describe says how one call ended.
func describe(r result) string {
	var ce *mesh.CallError
	switch {
	case errors.As(r.err, &ce):
		return fmt.Sprintf("refused by the mesh at layer %s (%v)", ce.Layer, ce.Err)
	case r.err != nil:
		return r.err.Error()
	default:
		return fmt.Sprintf("answered %d", r.code)
	}
}

// report tells what enrollment's callers saw over the phases with
// traffic, and what the backends received.
func report(out io.Writer, s *stats, hits map[string]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pct := func(a, b int) float64 {
		if b == 0 {
			return 0
		}
		return 100 * float64(a) / float64(b)
	}
	b := s.calls["billing"]
	fmt.Fprintf(out, "billing   canary split: v1 %d (%.1f%%), v2 %d (%.1f%%) of %d calls, 90/10 then 50/50\n",
		s.versions["v1"], pct(s.versions["v1"], b), s.versions["v2"], pct(s.versions["v2"], b), b)

	c := s.calls["catalog"]
	ch := hits["catalog"]
	fmt.Fprintf(out, "catalog   flaky (1 in 4 answers is a 503, at random): %d of %d calls succeeded (%.1f%%); the backend saw %d attempts, so retries absorbed %d failures\n",
		s.ok["catalog"], c, pct(s.ok["catalog"], c), ch, ch-int64(c))

	g := s.calls["grades"]
	fmt.Fprintf(out, "grades    gRPC (health service via mesh:///grades, mTLS, route and retries from the same policy): %d of %d RPCs SERVING, %d reached the server\n",
		s.ok["grades"], g, hits["grades"])

	p := s.calls["progress"]
	ph := hits["progress"]
	fmt.Fprintf(out, "progress  dead (every answer is a 500): %d calls, %d reached the backend, %d failed fast at the open breaker\n",
		p, ph, s.layers["progress"]["breaker"])

	nc := s.calls["notifications"]
	fmt.Fprintf(out, "notifications  down for the outage: %d of %d calls succeeded, %d failed fast at its breaker, the backend saw %d\n",
		s.ok["notifications"], nc, s.layers["notifications"]["breaker"], hits["notifications"])

	fmt.Fprintf(out, "\nfailures by layer (mesh errors; 5xx answers returned as responses are counted apart):\n")
	services := make([]string, 0, len(s.calls))
	for svc := range s.calls {
		services = append(services, svc)
	}
	sort.Strings(services)
	for _, svc := range services {
		var parts []string
		for layer, n := range s.layers[svc] {
			parts = append(parts, fmt.Sprintf("%s=%d", layer, n))
		}
		sort.Strings(parts)
		if len(parts) == 0 {
			parts = []string{"none"}
		}
		fmt.Fprintf(out, "  %-13s calls=%-5d ok=%-5d 5xx-responses=%-5d %s\n", svc, s.calls[svc], s.ok[svc], s.responses[svc], strings.Join(parts, " "))
	}
}

// tell writes the whole report of res.
func tell(out io.Writer, res *outcome) {
	for i, p := range res.phases {
		reportPhase(out, i+1, p)
	}
	var versions []string
	for _, p := range res.phases {
		if len(versions) == 0 || versions[len(versions)-1] != p.config.Version {
			versions = append(versions, p.config.Version)
		}
	}
	fmt.Fprintf(out, "\npolicy versions applied: %s\n", strings.Join(versions, " -> "))
	fmt.Fprintf(out, "\nover phases 1-4, as enrollment's callers saw it:\n")
	report(out, res.stats, res.hits)
	fmt.Fprintf(out, "\nprogress -> billing POST /charge: %s\n", describe(res.denied))
	fmt.Fprintf(out, "progress -> grades Check (gRPC): %s\n", describeRPC(res.rpcDenied))
	fmt.Fprintf(out, "enrollment -> grades Check of an unknown service: %s\n", describeRPC(res.rpcUnknown))
	if res.overload != nil {
		res.overload.report(out)
	}
}

// Command platform is the inmesh demo: the learning platform of our story
// in one process on loopback. enrollment calls billing (v1 and a v2 canary
// taking 10%), catalog (flaky: retries absorb its 503s), progress (dead:
// its breaker opens and fails fast) and, over gRPC, grades (the stock gRPC
// health service behind meshgrpc.ServerOptions, called through
// meshgrpc.DialOptions), for a few seconds, then prints what the mesh did,
// each failure counted by layer. A last phase offers recommendations, a
// saturated dependency, 1.5x its capacity: the adaptive concurrency limit
// keeps it at capacity, and the demo prints the goodput.
//
//	go run ./examples/platform [-policy FILE] [-duration 3s]
//
// Without -policy it uses the embedded mesh.yaml.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
	"github.com/inmesh/inmesh/policy"
)

//go:embed mesh.yaml
var embeddedPolicy []byte

func main() {
	policyFile := flag.String("policy", "", "policy file (default: the embedded mesh.yaml)")
	duration := flag.Duration("duration", 3*time.Second, "how long to send traffic")
	workers := flag.Int("workers", 4, "concurrent callers")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *policyFile, *duration, *workers, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "platform:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, policyFile string, duration time.Duration, workers int, out io.Writer) error {
	data := embeddedPolicy
	source := "embedded mesh.yaml"
	if policyFile != "" {
		var err error
		if data, err = os.ReadFile(policyFile); err != nil {
			return err
		}
		source = policyFile
	}
	res, err := simulate(ctx, data, duration, workers)
	if err != nil {
		return fmt.Errorf("%s: %w", source, err)
	}
	fmt.Fprintf(out, "inmesh platform demo: policy %s from %s, %d callers for %v\n", res.version, source, workers, duration)
	fmt.Fprintf(out, "every call is mTLS; enrollment calls as %s\n\n", res.identity)
	report(out, res.stats, res.hits)
	fmt.Fprintf(out, "\nprogress -> billing POST /charge: %s\n", describe(res.denied))
	fmt.Fprintf(out, "progress -> grades Check (gRPC): %s\n", describeRPC(res.rpcDenied))
	fmt.Fprintf(out, "enrollment -> grades Check of an unknown service: %s\n", describeRPC(res.rpcUnknown))
	res.overload.report(out)
	return nil
}

// outcome is what one run of the demo saw.
type outcome struct {
	version  string
	identity string // enrollment's SPIFFE ID
	stats    *stats
	hits     map[string]int64 // requests each service's servers received
	denied   result           // progress calling billing
	// rpcDenied is progress calling grades over gRPC; rpcUnknown,
	// enrollment asking grades about a service it does not know.
	rpcDenied, rpcUnknown error
	overload              *overloadResult
}

// simulate starts the fleet and the enrollment mesh on the policy in data,
// sends traffic for duration, and returns what happened.
func simulate(ctx context.Context, data []byte, duration time.Duration, workers int) (*outcome, error) {
	doc, err := policy.Parse(data)
	if err != nil {
		return nil, err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	fleet, err := startFleet(startCtx, doc, logger)
	if err != nil {
		return nil, err
	}
	defer fleet.close()

	m, err := mesh.New(startCtx, mesh.WithService("enrollment"), mesh.WithPolicy(doc), mesh.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	defer m.Close()

	// progress has no business charging students: billing's authorization
	// says so, and its mesh denies the call before billing's code runs.
	intruder, err := mesh.New(startCtx, mesh.WithService("progress"), mesh.WithPolicy(doc), mesh.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	defer intruder.Close()
	denied := call(ctx, intruder.HTTPClient(), http.MethodPost, "http://billing/charge")

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
	_, rpcDenied := healthpb.NewHealthClient(intruderConn).Check(ctx, &healthpb.HealthCheckRequest{Service: "grades"})

	res := &outcome{
		version: m.PolicyVersion(),
		stats:   drive(ctx, m.HTTPClient(), healthpb.NewHealthClient(grades), duration, workers),
		hits:    map[string]int64{}, denied: denied, rpcDenied: rpcDenied,
	}
	res.overload = overload(ctx, m, fleet.hits["recommendations"], min(duration, 2*time.Second))
	if id, err := m.Identity(); err == nil {
		res.identity = id.ID.String()
	}
	for svc, n := range fleet.hits {
		res.hits[svc] = n.Load()
	}
	// grades' own answer to a question it cannot answer: the mesh passes
	// an application's status on untouched.
	_, res.rpcUnknown = healthpb.NewHealthClient(grades).Check(ctx, &healthpb.HealthCheckRequest{Service: "lunch-menu"})
	return res, nil
}

// ---- the fleet: real HTTPS servers on loopback, each behind its own mesh ----

// fleet is the set of backend servers the demo runs.
type fleet struct {
	servers []*http.Server
	rpc     []*grpc.Server // endpoints labeled protocol: grpc
	meshes  []*mesh.Mesh
	wg      sync.WaitGroup
	hits    map[string]*atomic.Int64 // by service
}

// startFleet starts one server per endpoint of the policy, on the port the
// document names when it is free and on another one when it is not (the
// endpoint is rewritten), each behind a mesh of its service: mTLS with the
// workload's identity, authorization of its callers, telemetry.
func startFleet(ctx context.Context, doc *policy.Document, logger *slog.Logger) (*fleet, error) {
	type endpoint struct {
		service, version, protocol string
		ln                         net.Listener
	}
	var eps []endpoint
	f := &fleet{hits: map[string]*atomic.Int64{}}
	for name, svc := range doc.Services {
		f.hits[name] = new(atomic.Int64)
		for i := range svc.Endpoints {
			ep := &svc.Endpoints[i]
			ln, err := net.Listen("tcp", ep.Address)
			if err != nil {
				if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
					f.close()
					return nil, err
				}
				ep.Address = ln.Addr().String()
			}
			eps = append(eps, endpoint{name, ep.Labels["version"], ep.Labels["protocol"], ln})
		}
	}
	for _, ep := range eps {
		m, err := mesh.New(ctx, mesh.WithService(ep.service), mesh.WithPolicy(doc), mesh.WithLogger(logger))
		if err != nil {
			for _, e := range eps {
				_ = e.ln.Close()
			}
			f.close()
			return nil, err
		}
		f.meshes = append(f.meshes, m)
		if ep.protocol == "grpc" {
			// The stock health service, every answer counted, behind the
			// mesh: mTLS, authorization of the caller, telemetry.
			hits := f.hits[ep.service]
			srv := grpc.NewServer(append(meshgrpc.ServerOptions(m), grpc.ChainUnaryInterceptor(
				func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					hits.Add(1)
					return h(ctx, req)
				}))...)
			hs := health.NewServer()
			hs.SetServingStatus(ep.service, healthpb.HealthCheckResponse_SERVING)
			healthpb.RegisterHealthServer(srv, hs)
			f.rpc = append(f.rpc, srv)
			f.wg.Go(func() { _ = srv.Serve(ep.ln) })
			continue
		}
		srv := &http.Server{
			Handler:           m.Handler(behaviour(ep.service, ep.version, f.hits[ep.service])),
			TLSConfig:         m.ServerTLSConfig(),
			ReadHeaderTimeout: 5 * time.Second,
		}
		f.servers = append(f.servers, srv)
		f.wg.Go(func() { _ = srv.ServeTLS(ep.ln, "", "") })
	}
	return f, nil
}

func (f *fleet) close() {
	for _, s := range f.servers {
		_ = s.Close()
	}
	for _, s := range f.rpc {
		s.Stop()
	}
	f.wg.Wait()
	for _, m := range f.meshes {
		_ = m.Close()
	}
}

// behaviour is what each service of the story does.
func behaviour(service, version string, hits *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch service {
		case "catalog": // flaky: one answer in four, at random, is a 503
			if rand.IntN(4) == 0 {
				http.Error(w, "catalog overloaded", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "courses")
		case "progress": // dead
			http.Error(w, "progress: database down", http.StatusInternalServerError)
		case "recommendations": // saturated
			select {
			case recommendationSlots <- struct{}{}:
				time.Sleep(recommendationTime)
				<-recommendationSlots
				_, _ = io.WriteString(w, "try go-201")
			default:
				http.Error(w, "recommendations: at capacity", http.StatusServiceUnavailable)
			}
		default:
			_, _ = fmt.Fprintf(w, "%s %s", service, version)
		}
	})
}

// recommendations serves this many requests at once, each taking
// recommendationTime; one more is answered 503 at once.
const (
	recommendationCapacity = 4
	recommendationTime     = 10 * time.Millisecond
)

var recommendationSlots = make(chan struct{}, recommendationCapacity)

// ---- traffic ----

// stats counts what the callers saw.
type stats struct {
	mu        sync.Mutex
	calls     map[string]int            // by service
	ok        map[string]int            // 2xx by service
	responses map[string]int            // non-2xx answers returned, by service
	versions  map[string]int            // billing answers by version
	layers    map[string]map[string]int // mesh failures by service and layer
}

func drive(ctx context.Context, client *http.Client, grades healthpb.HealthClient, d time.Duration, workers int) *stats {
	s := &stats{calls: map[string]int{}, ok: map[string]int{}, responses: map[string]int{}, versions: map[string]int{}, layers: map[string]map[string]int{}}
	targets := []struct{ service, method, url string }{
		{"billing", http.MethodPost, "http://billing/charge"},
		{"billing", http.MethodGet, "http://billing/invoices"},
		{"catalog", http.MethodGet, "http://catalog/courses"},
		{"progress", http.MethodGet, "http://progress/students/42"},
		{"grades", "gRPC", "mesh:///grades"},
	}
	// Callers stop starting calls after d; calls in flight finish, so the
	// end of the demo is not counted as failures.
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ctx.Err() == nil && time.Now().Before(stop); i++ {
				t := targets[i%len(targets)]
				if t.method == "gRPC" {
					s.record(t.service, check(ctx, grades, t.service))
					continue
				}
				s.record(t.service, call(ctx, client, t.method, t.url))
			}
		})
	}
	wg.Wait()
	return s
}

type result struct {
	code int
	body string
	err  error
}

func call(ctx context.Context, client *http.Client, method, url string) result {
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader(`{"student":42,"course":"go-101"}`)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return result{err: err}
	}
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return result{code: resp.StatusCode, body: string(b), err: err}
}

// check asks service's health over gRPC. SERVING is a success; another
// answer of the destination counts as a non-2xx answer; a failure of the
// mesh is the CallError it returns.
func check(ctx context.Context, c healthpb.HealthClient, service string) result {
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	switch {
	case meshgrpc.FromStatus(err) != nil:
		return result{err: err}
	case err != nil:
		if st, ok := grpcstatus.FromError(err); ok && st.Code() == codes.Canceled {
			return result{err: context.Canceled}
		}
		return result{body: err.Error()}
	case resp.GetStatus() != healthpb.HealthCheckResponse_SERVING:
		return result{body: resp.GetStatus().String()}
	}
	return result{code: http.StatusOK, body: resp.GetStatus().String()}
}

func (s *stats) record(service string, r result) {
	if errors.Is(r.err, context.Canceled) {
		return // interrupted: not a result
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[service]++
	var ce *mesh.CallError
	if r.err != nil && s.layers[service] == nil {
		s.layers[service] = map[string]int{}
	}
	switch {
	case errors.As(r.err, &ce):
		s.layers[service][string(ce.Layer)]++
	case r.err != nil:
		s.layers[service]["other"]++
	case r.code/100 == 2:
		s.ok[service]++
		if service == "billing" {
			s.versions[strings.TrimPrefix(r.body, "billing ")]++
		}
	default:
		s.responses[service]++
	}
}

// overloadResult is what the overload phase saw.
type overloadResult struct {
	offered, ok, rejected, shed, other int
	backend                            int64 // requests recommendations received
	limit                              int   // the concurrency limit enrollment learned
	d                                  time.Duration
}

// capacity is what recommendations can serve in the phase.
func (o *overloadResult) capacity() float64 {
	return recommendationCapacity * float64(o.d/recommendationTime)
}

// overload offers recommendations 1.5x its capacity for d, open loop (every
// call at its time, whatever the earlier ones do), and counts the answers.
func overload(ctx context.Context, m *mesh.Mesh, hits *atomic.Int64, d time.Duration) *overloadResult {
	res := &overloadResult{d: d}
	perSecond := 1.5 * recommendationCapacity * float64(time.Second/recommendationTime)
	n := int(perSecond * d.Seconds())
	interval := time.Duration(float64(time.Second) / perSecond)
	client := m.HTTPClient()
	before := hits.Load()
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n && ctx.Err() == nil; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		res.offered++
		wg.Go(func() {
			r := call(ctx, client, http.MethodGet, "http://recommendations/next")
			var ce *mesh.CallError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.As(r.err, &ce) && ce.Layer == mesh.LayerOverload:
				res.shed++
			case r.err == nil && r.code == http.StatusOK:
				res.ok++
			case r.err == nil && r.code == http.StatusServiceUnavailable:
				res.rejected++
			default:
				res.other++
			}
		})
	}
	wg.Wait()
	res.backend = hits.Load() - before
	if req, err := http.NewRequest(http.MethodGet, "http://recommendations/next", nil); err == nil {
		if ex, err := m.Explain(req); err == nil && ex.Concurrency != nil {
			res.limit = ex.Concurrency.Limit
		}
	}
	return res
}

func (o *overloadResult) report(out io.Writer) {
	fmt.Fprintf(out, "\nrecommendations saturated (%d at once, %v each: %.0f calls/s), offered 1.5x for %v:\n",
		recommendationCapacity, recommendationTime, o.capacity()/o.d.Seconds(), o.d)
	fmt.Fprintf(out, "  goodput %.0f calls/s = %.0f%% of its capacity; %d of %d calls answered, %d shed at layer overload, %d answered 503 by the backend\n",
		float64(o.ok)/o.d.Seconds(), 100*float64(o.ok)/o.capacity(), o.ok, o.offered, o.shed, o.rejected)
	if o.other > 0 {
		fmt.Fprintf(out, "  %d calls failed otherwise\n", o.other)
	}
	fmt.Fprintf(out, "  the adaptive concurrency limit learned %d in flight (the backend has %d slots)\n", o.limit, recommendationCapacity)
}

// ---- report ----

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
	fmt.Fprintf(out, "billing   canary split: v1 %d (%.1f%%), v2 %d (%.1f%%) of %d calls; policy says 90/10\n",
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
		fmt.Fprintf(out, "  %-9s calls=%-5d ok=%-5d 5xx-responses=%-5d %s\n", svc, s.calls[svc], s.ok[svc], s.responses[svc], strings.Join(parts, " "))
	}
}

// Command platform is the inmesh demo: the learning platform of our story
// in one process on loopback. enrollment calls billing (v1 and a v2 canary
// taking 10%), catalog (flaky: retries absorb its 503s) and progress (dead:
// its breaker opens and fails fast), for a few seconds, then prints what the
// mesh did, each failure counted by layer.
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

	"github.com/inmesh/inmesh/mesh"
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
	fmt.Fprintf(out, "inmesh platform demo: policy %s from %s, %d callers for %v\n\n", res.version, source, workers, duration)
	report(out, res.stats, res.hits)
	return nil
}

// outcome is what one run of the demo saw.
type outcome struct {
	version string
	stats   *stats
	hits    map[string]int64 // requests each service's servers received
}

// simulate starts the fleet and the enrollment mesh on the policy in data,
// sends traffic for duration, and returns what happened.
func simulate(ctx context.Context, data []byte, duration time.Duration, workers int) (*outcome, error) {
	doc, err := policy.Parse(data)
	if err != nil {
		return nil, err
	}
	fleet, err := startFleet(doc)
	if err != nil {
		return nil, err
	}
	defer fleet.close()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := mesh.New(startCtx, mesh.WithService("enrollment"), mesh.WithPolicy(doc), mesh.WithLogger(logger))
	if err != nil {
		return nil, err
	}
	defer m.Close()

	res := &outcome{version: m.PolicyVersion(), stats: drive(ctx, m.HTTPClient(), duration, workers), hits: map[string]int64{}}
	for svc, n := range fleet.hits {
		res.hits[svc] = n.Load()
	}
	return res, nil
}

// ---- the fleet: real HTTP servers on loopback ----

// fleet is the set of backend servers the demo runs.
type fleet struct {
	servers []*http.Server
	wg      sync.WaitGroup
	hits    map[string]*atomic.Int64 // by service
}

// startFleet starts one server per endpoint of the policy, on the port the
// document names when it is free and on another one when it is not (the
// endpoint is rewritten), with each service's behaviour.
func startFleet(doc *policy.Document) (*fleet, error) {
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
			srv := &http.Server{Handler: behaviour(name, ep.Labels["version"], f.hits[name]), ReadHeaderTimeout: 5 * time.Second}
			f.servers = append(f.servers, srv)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				_ = srv.Serve(ln)
			}()
		}
	}
	return f, nil
}

func (f *fleet) close() {
	for _, s := range f.servers {
		_ = s.Close()
	}
	f.wg.Wait()
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
		default:
			_, _ = fmt.Fprintf(w, "%s %s", service, version)
		}
	})
}

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

func drive(ctx context.Context, client *http.Client, d time.Duration, workers int) *stats {
	s := &stats{calls: map[string]int{}, ok: map[string]int{}, responses: map[string]int{}, versions: map[string]int{}, layers: map[string]map[string]int{}}
	targets := []struct{ service, method, url string }{
		{"billing", http.MethodPost, "http://billing/charge"},
		{"billing", http.MethodGet, "http://billing/invoices"},
		{"catalog", http.MethodGet, "http://catalog/courses"},
		{"progress", http.MethodGet, "http://progress/students/42"},
	}
	// Callers stop starting calls after d; calls in flight finish, so the
	// end of the demo is not counted as failures.
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ctx.Err() == nil && time.Now().Before(stop); i++ {
				t := targets[i%len(targets)]
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

func (s *stats) record(service string, r result) {
	if errors.Is(r.err, context.Canceled) {
		return // interrupted: not a result
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[service]++
	var ce *mesh.CallError
	switch {
	case errors.As(r.err, &ce):
		if s.layers[service] == nil {
			s.layers[service] = map[string]int{}
		}
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

// ---- report ----

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

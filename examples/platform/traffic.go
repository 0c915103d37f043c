package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/inmesh/inmesh/mesh"
	"github.com/inmesh/inmesh/meshgrpc"
)

// ---- traffic: enrollment's callers, from the first phase to the overload ----

// stats counts what the callers saw.
type stats struct {
	mu        sync.Mutex
	calls     map[string]int            // by service
	ok        map[string]int            // 2xx by service
	responses map[string]int            // non-2xx answers returned, by service
	versions  map[string]int            // billing answers by version
	layers    map[string]map[string]int // mesh failures by service and layer
}

func newStats() *stats {
	return &stats{calls: map[string]int{}, ok: map[string]int{}, responses: map[string]int{}, versions: map[string]int{}, layers: map[string]map[string]int{}}
}

// targets are the calls enrollment makes, in turn.
var targets = []struct{ service, method, url string }{
	{"billing", http.MethodPost, "http://billing/charge"},
	{"billing", http.MethodGet, "http://billing/invoices"},
	{"catalog", http.MethodGet, "http://catalog/courses"},
	{"progress", http.MethodGet, "http://progress/students/42"},
	{"notifications", http.MethodPost, "http://notifications/send"},
	{"grades", "gRPC", "mesh:///grades"},
}

// traffic is workers callers sending targets in turn until stopped; each
// result is counted in total and in the stats of the phase in force.
type traffic struct {
	total *stats
	phase atomic.Pointer[stats]
	stop  chan struct{}
	wg    sync.WaitGroup
}

func startTraffic(ctx context.Context, client *http.Client, grades healthpb.HealthClient, workers int) *traffic {
	t := &traffic{total: newStats(), stop: make(chan struct{})}
	for w := range workers {
		t.wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-t.stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				tg := targets[i%len(targets)]
				var r result
				if tg.method == "gRPC" {
					r = check(ctx, grades, tg.service)
				} else {
					r = call(ctx, client, tg.method, tg.url)
				}
				t.total.record(tg.service, r)
				if s := t.phase.Load(); s != nil {
					s.record(tg.service, r)
				}
			}
		})
	}
	return t
}

// halt stops the callers; calls in flight finish, so the end of the
// traffic is not counted as failures.
func (t *traffic) halt() {
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	t.wg.Wait()
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
	if r.err != nil && !errors.As(r.err, &ce) {
		ce = meshgrpc.FromStatus(r.err) // a gRPC status carrying a CallError
	}
	switch {
	case ce != nil:
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

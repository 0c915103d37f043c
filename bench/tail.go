package main

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/hedgepolicy"
)

// Tail latency: two endpoints of one service, one of them slowDelay slow
// (until its caller gives up on the request), called in a closed loop by
// tailWorkers goroutines; the p50 and p99 of the calls' latencies. The
// bare client and failsafe-go spread the calls round robin over both
// endpoints, as the mesh does.

const (
	slowDelay   = 200 * time.Millisecond
	hedgeDelay  = 20 * time.Millisecond
	tailWorkers = 8
)

// A tailStack is a client of the two endpoints. build returns a new one
// and the URL to call for backends at fast and slow.
type tailStack struct {
	name  string
	build func(e *env, fast, slow string) (http.RoundTripper, string, error)
}

// tailStacks are the rows of the tail latency section. A new protection
// is a new entry.
var tailStacks = []tailStack{
	{"bare http.Transport, round robin (one try)", func(e *env, fast, slow string) (http.RoundTripper, string, error) {
		return &roundRobin{next: e.loadTransport(), hosts: []string{fast, slow}}, "http://billing/", nil
	}},
	{fmt.Sprintf("failsafe-go, round robin, hedge %v", hedgeDelay), func(e *env, fast, slow string) (http.RoundTripper, string, error) {
		rr := &roundRobin{next: e.loadTransport(), hosts: []string{fast, slow}}
		hp := hedgepolicy.NewBuilderWithDelay[*http.Response](hedgeDelay).Build()
		return failsafehttp.NewRoundTripper(rr, hp), "http://billing/", nil
	}},
	{"inmesh, no hedge", meshTail("")},
	{fmt.Sprintf("inmesh, hedge %v (default budget, 20%%)", hedgeDelay), meshTail(fmt.Sprintf("    hedge: {delay: %v}\n", hedgeDelay))},
	// Half the calls start on the slow endpoint: hedging them all takes a
	// budget that admits a hedge for every other call.
	{fmt.Sprintf("inmesh, hedge %v, budget ratio 1", hedgeDelay), meshTail(fmt.Sprintf("    hedge: {delay: %v}\n    retry: {budget: {ratio: 1, min_per_second: 10}}\n", hedgeDelay))},
	// least_request sends first attempts where fewer are in flight, away
	// from the slow endpoint: few calls need a hedge, and the default
	// budget pays for them.
	{fmt.Sprintf("inmesh, hedge %v, least_request (default budget)", hedgeDelay), meshTail(fmt.Sprintf("    hedge: {delay: %v}\n    load_balancer: least_request\n", hedgeDelay))},
	{"inmesh, least_request, no hedge", meshTail("    load_balancer: least_request\n")},
}

// meshTail builds an inmesh client of billing on both endpoints, with a
// timeout and settings (YAML lines of billing's).
func meshTail(settings string) func(e *env, fast, slow string) (http.RoundTripper, string, error) {
	return func(e *env, fast, slow string) (http.RoundTripper, string, error) {
		doc := fmt.Sprintf(`trust_domain: %s
services:
  enrollment: {}
  billing:
    tls: disable
    endpoints: [{address: %s}, {address: %s}]
    timeout: 2s
%s`, trustDomain, fast, slow, settings)
		m, err := e.newMesh("enrollment", doc, telemetryOff())
		if err != nil {
			return nil, "", err
		}
		return m.RoundTripper(e.loadTransport()), "http://billing/", nil
	}
}

// roundRobin sends each request to the next of hosts: the client-side
// balancing the bare rows need to reach both endpoints.
type roundRobin struct {
	next  http.RoundTripper
	hosts []string
	n     atomic.Uint64
}

func (rr *roundRobin) RoundTrip(req *http.Request) (*http.Response, error) {
	out := req.Clone(req.Context())
	out.URL.Host = rr.hosts[(rr.n.Add(1)-1)%uint64(len(rr.hosts))]
	out.Host = ""
	return rr.next.RoundTrip(out)
}

func tailSections(e *env) ([]*section, error) {
	s := &section{title: fmt.Sprintf("Tail latency: two endpoints, one %v slow, %d callers in a closed loop", slowDelay, tailWorkers),
		dur: e.cfg.load, warm: e.cfg.warm, columns: []column{
			value("p50 ms", "p50_ms", "%.1f"),
			value("p99 ms", "p99_ms", "%.1f"),
			value("backend req/call", "req_per_call", "%.2f"),
			value("calls/s", "calls_per_s", "%.0f"),
		}}
	var hits atomic.Int64
	serve := func(h http.HandlerFunc) (string, error) {
		ln, err := e.listen()
		if err != nil {
			return "", err
		}
		e.serveHTTP(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			h(w, r)
		}), nil)
		return ln.Addr().String(), nil
	}
	fast, err := serve(func(http.ResponseWriter, *http.Request) {})
	if err != nil {
		return nil, err
	}
	slow, err := serve(func(_ http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(slowDelay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
	})
	if err != nil {
		return nil, err
	}
	for _, st := range tailStacks {
		s.add(st.name, func(d time.Duration) (metrics, error) {
			round := &env{cfg: e.cfg, ca: e.ca}
			defer round.run()
			rt, url, err := st.build(round, fast, slow)
			if err != nil {
				return nil, err
			}
			before := hits.Load()
			lat, err := closedLoop(rt, url, tailWorkers, d)
			if err != nil {
				return nil, err
			}
			slices.Sort(lat)
			return metrics{
				"p50_ms":       ms(quantile(lat, 0.50)),
				"p99_ms":       ms(quantile(lat, 0.99)),
				"req_per_call": float64(hits.Load()-before) / float64(len(lat)),
				"calls_per_s":  float64(len(lat)) / d.Seconds(),
			}, nil
		})
	}
	return []*section{s}, nil
}

// closedLoop calls GET url through rt from workers goroutines, each
// calling again as soon as its call ends, for d, and returns the latency
// of every call. A call that fails or is not answered 200 is an error.
func closedLoop(rt http.RoundTripper, url string, workers int, d time.Duration) ([]time.Duration, error) {
	var mu sync.Mutex
	var all []time.Duration
	errs := make([]error, workers)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var mine []time.Duration
			defer func() {
				mu.Lock()
				all = append(all, mine...)
				mu.Unlock()
			}()
			for time.Now().Before(deadline) {
				req, err := http.NewRequest(http.MethodGet, url, nil)
				if err != nil {
					errs[w] = err
					return
				}
				start := time.Now()
				resp, err := rt.RoundTrip(req)
				if err != nil {
					errs[w] = err
					return
				}
				drain(resp)
				mine = append(mine, time.Since(start))
				if resp.StatusCode != http.StatusOK {
					errs[w] = fmt.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("no call ended within %v", d)
	}
	return all, nil
}

// quantile returns the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
